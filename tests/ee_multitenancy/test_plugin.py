"""The plugin as a package: entry point, light import, disabled = single tenant, several
instances on one database (revocation and deactivation seen at once by all)."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from mail_proxy.core.engine.encryption import generate_key
from support.ce_api import Api, start_api
from support.multitenancy import as_tenant, create_tenant

PACKAGE = Path(__file__).resolve().parents[2] / "packages" / "ee-multitenancy"
SRC = PACKAGE / "src" / "mail_proxy"


def test_registered_through_the_entry_point_only() -> None:
    eps = [
        e for e in importlib.metadata.entry_points(group="mail_proxy") if e.name == "multitenancy"
    ]
    assert len(eps) == 1 and eps[0].value == "mail_proxy.ee.multitenancy.plugin"
    assert eps[0].dist is not None and eps[0].dist.name == "genro-mail-proxy-ee-multitenancy"
    meta = importlib.metadata.metadata("genro-mail-proxy-ee-multitenancy")
    assert meta["License-Expression"] == "BUSL-1.1"
    requires = importlib.metadata.requires("genro-mail-proxy-ee-multitenancy") or []
    assert "genro-mail-proxy-core==0.1.0" in requires and "genro-mail-proxy-ce==0.1.0" in requires
    # PEP 420 namespaces; no import of another enterprise package
    assert not (SRC / "__init__.py").exists() and not (SRC / "ee" / "__init__.py").exists()
    for source in (SRC / "ee" / "multitenancy").glob("*.py"):
        for name in re.findall(r"mail_proxy\.ee\.(\w+)", source.read_text()):
            assert name == "multitenancy", f"{source.name} imports mail_proxy.ee.{name}"
    assert "Change Date:          2030-11-29" in (PACKAGE / "LICENSE").read_text()


def test_plugin_module_is_light_to_import() -> None:
    code = (
        "import sys, mail_proxy.ee.multitenancy.plugin\n"
        "heavy = [m for m in ('aiohttp', 'sqlalchemy', 'pydantic', 'cyclopts', 'mail_proxy.ce')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "", out.stdout


async def test_disabled_plugin_means_single_tenant(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    key = generate_key()  # both instances decrypt the same database
    on = await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, encryption_key=key
    )
    assert "multitenancy" in (await on.get("/status"))["plugins"]
    acme = await create_tenant(on, "acme")
    await as_tenant(on, acme, "GET", "/tenant/acme")

    off = await start_api(
        aiohttp_client_factory,
        make_settings,
        db_url,
        tmp_path,
        disabled_plugins=["multitenancy"],
        encryption_key=key,
    )
    assert "multitenancy" not in (await off.get("/status"))["plugins"]
    for method, path in (
        ("POST", "/tenant"),
        ("GET", "/tenants"),
        ("GET", "/tenant/acme"),
        ("PUT", "/tenant/acme"),
        ("DELETE", "/tenant/acme"),
        ("GET", "/tenants/sync-status"),
        ("POST", "/tenant/acme/api-key"),
        ("DELETE", "/tenant/acme/api-key"),
    ):
        answer = await off.call(method, path, {} if method != "GET" else None, expect=404)
        assert answer["code"] == "not_found" and answer["ok"] is False
    refused = await as_tenant(off, acme, "GET", "/messages", expect=401)
    assert refused["code"] == "invalid_token"
    # the single-tenant product works: the default tenant, with the admin token
    await off.add_account("main")
    listed = await off.get("/accounts")
    assert [(a["tenant_id"], a["id"]) for a in listed["accounts"]] == [("default", "main")]


async def test_rotation_revocation_and_deactivation_reach_every_instance(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    key = generate_key()
    one = await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, encryption_key=key
    )
    two = await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, encryption_key=key
    )
    acme = await create_tenant(one, "acme")
    await as_tenant(two, acme, "GET", "/messages")

    new_key = (await one.post("/tenant/acme/api-key"))["api_key"]
    assert (await as_tenant(two, acme, "GET", "/messages", expect=401))["code"] == "invalid_token"
    await as_tenant(two, new_key, "GET", "/messages")

    await one.call("PUT", "/tenant/acme", {"active": False})
    inactive = await as_tenant(two, new_key, "GET", "/messages", expect=403)
    assert inactive["code"] == "tenant_inactive"
    await one.call("PUT", "/tenant/acme", {"active": True})
    await as_tenant(two, new_key, "GET", "/messages")

    await one.call("DELETE", "/tenant/acme/api-key")
    assert (await as_tenant(two, new_key, "GET", "/messages", expect=401))[
        "code"
    ] == "invalid_token"


async def test_openapi_documents_the_tenant_routes(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    api: Api = await start_api(aiohttp_client_factory, make_settings, db_url, tmp_path)
    resp = await api.client.get("/openapi.json")
    doc = await resp.json()
    paths = doc["paths"]
    for path in (
        "/tenant",
        "/tenants",
        "/tenants/sync-status",
        "/tenant/{id}",
        "/tenant/{id}/api-key",
        "/tenant/{id}/sync-secret",
    ):
        assert path in paths, path
    assert {"get", "put", "delete"} <= set(paths["/tenant/{id}"])
    schemas = doc["components"]["schemas"]
    for body in ("TenantCreate", "TenantUpdate"):
        assert {"client_auth", "rate_limits"} <= set(schemas[body]["properties"])
        # any other field is a plugin's tenant setting, validated by that plugin
        assert schemas[body]["additionalProperties"] is True
        assert "tenant setting" in schemas[body]["description"]
