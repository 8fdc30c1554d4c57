"""Tenant management: create, show, list, update, delete; configuration validation; secrets;
plugins' tenant settings in the tenant bodies (with the test plugin :mod:`.probe_setting`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from ee_multitenancy import probe_setting

from mail_proxy.core.contracts.storage import RateLimits
from mail_proxy.core.engine.attachments import get_resolver
from mail_proxy.core.engine.tenant_settings import TenantSettings
from mail_proxy.ee.multitenancy.keystore import TenantKeys
from support.ce_api import Api, message, start_api
from support.multitenancy import add_file_account, as_tenant, create_tenant

TOKEN = "tok-Sentinel-7f3a"
PASSWORD = "pw-Sentinel-9c1d"
FULL = {
    "name": "ACME Corp",
    "client_base_url": "https://acme.example.com/",
    "client_sync_path": "/mail-proxy/sync",
    "client_attachment_path": "/files",
    "client_auth": {"method": "bearer", "token": TOKEN},
    "rate_limits": {"per_minute": 10, "per_hour": 100},
}
PROBE_SECRET = "probe-Sentinel-51e0"


@pytest.fixture
async def probe_api(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> Api:
    """The app with the test plugin declaring the tenant settings probe_config (admin only,
    secret ``token``) and probe_note (a tenant may set it)."""
    settings = make_settings(database_url=db_url, test_mode=True)
    client = await aiohttp_client_factory(settings, plugins=probe_setting.plugins())
    return Api(client, tmp_path)


async def test_create_returns_secrets_once_and_never_again(api: Api) -> None:
    acme = await create_tenant(api, "acme", **FULL)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", acme.api_key)
    assert acme.sync_secret.startswith("whsec_")
    assert len(base64.b64decode(acme.sync_secret[len("whsec_") :])) == 32
    tenant = acme.answer["tenant"]
    assert tenant["id"] == "acme" and tenant["name"] == "ACME Corp" and tenant["active"] is True
    assert tenant["client_base_url"] == "https://acme.example.com"  # trailing '/' dropped
    assert tenant["client_auth"] == {"method": "bearer", "has_secret": True}
    assert tenant["rate_limits"] == {"per_minute": 10, "per_hour": 100, "per_day": None}
    assert tenant["has_api_key"] and tenant["has_sync_secret"]
    assert tenant["api_key_expires_at"] is None

    answers = [
        await api.get("/tenant/acme"),
        await as_tenant(api, acme, "GET", "/tenant/acme"),
        await api.get("/tenants"),
        await api.get("/tenants/sync-status"),
    ]
    answers.append(await api.get("/command-log"))
    text = json.dumps(answers)
    for secret in (acme.api_key, acme.sync_secret, TOKEN):
        assert secret not in text
    assert '"api_key_hash"' not in text and '"sync_secret"' not in text
    assert [t["id"] for t in answers[2]["tenants"]] == ["acme", "default"]

    stored = await api.runtime.storage.get_tenant("acme")
    key = await api.runtime.local(TenantKeys).of_tenant("acme")
    assert key.key_hash == hashlib.sha256(acme.api_key.encode()).hexdigest()
    assert stored.client_auth == {"method": "bearer", "token": TOKEN}
    assert stored.sync_secret == acme.sync_secret


async def test_secrets_are_not_in_the_database_file(
    aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    db = tmp_path / "gmp.db"
    api = await start_api(aiohttp_client_factory, make_settings, f"sqlite:///{db}", tmp_path)
    one = await create_tenant(
        api,
        "one",
        client_base_url="https://one.example.com",
        client_auth={"method": "basic", "user": "u", "password": PASSWORD},
    )
    two = await create_tenant(api, "two", client_auth={"method": "bearer", "token": TOKEN})
    rotated = await api.post("/tenant/two/api-key")
    secret = await api.post("/tenant/one/sync-secret")
    await as_tenant(api, one, "GET", "/tenant/one")
    raw = await asyncio.to_thread(_files_bytes, tmp_path, "gmp.db*")
    assert raw, "no database file"
    for clear in (
        one.api_key,
        two.api_key,
        rotated["api_key"],
        one.sync_secret,
        two.sync_secret,
        secret["sync_secret"],
        TOKEN,
        PASSWORD,
    ):
        assert clear.encode() not in raw, clear
    # the hash is what is stored
    assert hashlib.sha256(rotated["api_key"].encode()).hexdigest().encode() in raw


def _files_bytes(directory: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.glob(pattern)))


def _names(directory: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in directory.glob(pattern))


async def test_update_changes_only_given_fields_and_null_clears(api: Api) -> None:
    await create_tenant(api, "acme", **FULL)
    answer = await api.call("PUT", "/tenant/acme", {"name": "ACME Inc"})
    tenant = answer["tenant"]
    assert tenant["name"] == "ACME Inc"
    assert tenant["client_base_url"] == "https://acme.example.com"
    assert tenant["rate_limits"]["per_minute"] == 10 and tenant["client_auth"]["has_secret"]

    answer = await api.call("PUT", "/tenant/acme", {"client_sync_path": None, "rate_limits": None})
    assert answer["tenant"]["client_sync_path"] is None and answer["tenant"]["rate_limits"] is None
    assert answer["tenant"]["client_attachment_path"] == "/files"

    # a secret omitted with the same method is kept; a new one replaces it
    await api.call("PUT", "/tenant/acme", {"client_auth": {"method": "bearer"}})
    assert (await api.runtime.storage.get_tenant("acme")).client_auth["token"] == TOKEN
    await api.call("PUT", "/tenant/acme", {"client_auth": {"method": "bearer", "token": "new"}})
    assert (await api.runtime.storage.get_tenant("acme")).client_auth["token"] == "new"
    # switching to basic needs the password; then none; then cleared
    bad = await api.call(
        "PUT", "/tenant/acme", {"client_auth": {"method": "basic", "user": "u"}}, expect=400
    )
    assert bad["code"] == "validation_error" and bad["details"][0]["field"].startswith(
        "client_auth"
    )
    ok = await api.call(
        "PUT",
        "/tenant/acme",
        {"client_auth": {"method": "basic", "user": "u", "password": PASSWORD}},
    )
    assert ok["tenant"]["client_auth"] == {"method": "basic", "user": "u", "has_secret": True}
    await api.call("PUT", "/tenant/acme", {"client_auth": {"method": "basic", "user": "u"}})
    assert (await api.runtime.storage.get_tenant("acme")).client_auth["password"] == PASSWORD
    await api.call(
        "PUT", "/tenant/acme", {"client_auth": {"method": "basic", "user": "v"}}, expect=400
    )  # another user does not inherit the password
    ok = await api.call("PUT", "/tenant/acme", {"client_auth": None})
    assert ok["tenant"]["client_auth"] is None
    assert (await api.runtime.storage.get_tenant("acme")).client_auth is None
    nulls = await api.call("PUT", "/tenant/acme", {"active": None}, expect=400)
    assert nulls["code"] == "validation_error"


async def test_tenant_may_change_its_endpoints_but_not_its_quotas(api: Api) -> None:
    acme = await create_tenant(api, "acme", **FULL)
    for field, value in (("active", False), ("rate_limits", {"per_minute": 10**6})):
        answer = await as_tenant(api, acme, "PUT", "/tenant/acme", {field: value}, expect=403)
        assert answer["code"] == "admin_only_field" and answer["fields"] == [field]
    answer = await as_tenant(
        api,
        acme,
        "PUT",
        "/tenant/acme",
        {"name": "mine", "client_base_url": "https://new.example.com"},
    )
    assert answer["tenant"]["name"] == "mine"
    tenant = (await api.get("/tenant/acme"))["tenant"]
    assert tenant["rate_limits"]["per_minute"] == 10 and tenant["active"] is True


@pytest.fixture
async def api_without_large_files(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> Api:
    """The service with the large-files plugin switched off (it may be installed here)."""
    return await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, disabled_plugins=["large_files"]
    )


async def test_a_plugin_setting_without_its_plugin_is_refused_naming_the_plugin(
    api_without_large_files: Api,
) -> None:
    api = api_without_large_files
    config = {"enabled": True, "action": "warn"}
    answer = await api.post("/tenant", {"id": "acme", "large_file_config": config}, expect=400)
    assert answer["code"] == "plugin_not_installed" and answer["field"] == "large_file_config"
    assert answer["error"] == (
        "large_file_config needs the large-files plugin "
        "(pip install 'genro-mail-proxy[large-files]')"
    )
    assert [t["id"] for t in (await api.get("/tenants"))["tenants"]] == ["default"]

    acme = await create_tenant(api, "acme")
    assert "large_file_config" not in acme.answer["tenant"]
    for token in (None, acme):  # the same answer to the admin and to the tenant's own key
        body = {"name": "changed", "large_file_config": config}
        if token is None:
            answer = await api.call("PUT", "/tenant/acme", body, expect=400)
        else:
            answer = await as_tenant(api, token, "PUT", "/tenant/acme", body, expect=400)
        assert answer["code"] == "plugin_not_installed" and "large-files" in answer["error"]
    assert (await api.get("/tenant/acme"))["tenant"]["name"] is None  # nothing changed


async def test_a_plugin_setting_is_validated_stored_shown_without_secrets_and_removed(
    probe_api: Api,
) -> None:
    api, rt = probe_api, probe_api.runtime
    bad = await api.post("/tenant", {"id": "acme", "probe_config": {"level": 9}}, expect=400)
    assert bad["code"] == "invalid_setting" and bad["field"] == "probe_config"
    assert bad["error"].startswith("probe_config.level: ")
    assert [t["id"] for t in (await api.get("/tenants"))["tenants"]] == ["default"]

    config = {"level": 3, "token": PROBE_SECRET}
    acme = await create_tenant(api, "acme", name="ACME", probe_config=config)
    shown = acme.answer["tenant"]["probe_config"]
    assert shown == {"level": 3, "label": "probe", "token_set": True}
    assert acme.answer["tenant"]["probe_note"] is None
    plain = await rt.local(TenantSettings).get("acme", "probe_config")
    assert plain.level == 3 and plain.token == PROBE_SECRET  # what the plugin reads
    assert PROBE_SECRET not in json.dumps(await rt.storage.get_tenant_settings("acme"))
    answers = [
        await api.get("/tenant/acme"),
        await as_tenant(api, acme, "GET", "/tenant/acme"),
        await api.get("/tenants"),
        await api.get("/tenant-settings", params={"tenant_id": "acme"}),
    ]
    assert answers[0]["tenant"]["probe_config"] == shown == answers[1]["tenant"]["probe_config"]
    assert [t["probe_config"] for t in answers[2]["tenants"]] == [shown, None]
    assert answers[3]["settings"]["probe_config"] == shown
    assert PROBE_SECRET not in json.dumps(answers)

    # the tenant's own key may not set an admin-only setting, and may set the other one
    refused = await as_tenant(
        api, acme, "PUT", "/tenant/acme", {"name": "x", "probe_config": {"level": 1}}, expect=403
    )
    assert refused["code"] == "admin_only_field" and refused["fields"] == ["probe_config"]
    assert (await api.get("/tenant/acme"))["tenant"]["name"] == "ACME"
    noted = await as_tenant(api, acme, "PUT", "/tenant/acme", {"probe_note": {"note": "hi"}})
    assert noted["tenant"]["probe_note"] == {"note": "hi"}
    assert noted["tenant"]["probe_config"] == shown
    empty = {"probe_note": {"note": ""}}
    invalid = await as_tenant(api, acme, "PUT", "/tenant/acme", empty, expect=400)
    assert invalid["code"] == "invalid_setting" and invalid["field"] == "probe_note"

    # the admin replaces a setting as a whole; null removes it
    replaced = await api.call("PUT", "/tenant/acme", {"probe_config": {"level": 5}})
    assert replaced["tenant"]["probe_config"] == {"level": 5, "label": "probe", "token_set": False}
    cleared = await api.call("PUT", "/tenant/acme", {"probe_config": None})
    assert cleared["tenant"]["probe_config"] is None
    assert await rt.local(TenantSettings).get("acme", "probe_config") is None

    # deleting the tenant removes its settings: the same id created again starts without them
    await api.call("PUT", "/tenant/acme", {"probe_config": config})
    await api.call("DELETE", "/tenant/acme")
    assert await rt.storage.get_tenant_settings("acme") == {}
    again = (await create_tenant(api, "acme")).answer["tenant"]
    assert again["probe_config"] is None and again["probe_note"] is None


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"id": "a/b"}, "id"),
    ({"id": "-x"}, "id"),
    ({"id": "a:b"}, "id"),
    ({"id": "x" * 64}, "id"),
    ({"id": ""}, "id"),
    ({"name": "a\r\nb"}, "name"),
    ({"active": "yes"}, "active"),
    ({"client_base_url": "ftp://acme.example.com"}, "client_base_url"),
    ({"client_base_url": "https://"}, "client_base_url"),
    ({"client_base_url": "acme.example.com"}, "client_base_url"),
    ({"client_base_url": "javascript:alert(1)"}, "client_base_url"),
    ({"client_base_url": "https://u:p@acme.example.com"}, "client_base_url"),
    ({"client_base_url": "https://acme.example.com/?x=1"}, "client_base_url"),
    ({"client_base_url": "https://acme.example.com:99999"}, "client_base_url"),
    ({"client_base_url": "https://acme .example.com"}, "client_base_url"),
    ({"client_sync_path": "sync"}, "client_sync_path"),
    ({"client_sync_path": "//evil.example.com/x"}, "client_sync_path"),
    ({"client_attachment_path": "/a b"}, "client_attachment_path"),
    ({"client_auth": {"method": "digest"}}, "client_auth"),
    ({"client_auth": {"method": "bearer"}}, "client_auth"),
    ({"client_auth": {"method": "bearer", "token": "t", "password": "p"}}, "client_auth"),
    ({"client_auth": {"method": "basic", "password": "p"}}, "client_auth"),
    ({"client_auth": {"method": "basic", "user": "a:b", "password": "p"}}, "client_auth"),
    ({"client_auth": {"method": "none", "token": "t"}}, "client_auth"),
    ({"client_auth": {"method": "bearer", "token": "t\r\nX-Evil: 1"}}, "client_auth"),
    ({"client_auth": "bearer xyz"}, "client_auth"),
    ({"rate_limits": {"per_minute": -1}}, "rate_limits"),
    ({"rate_limits": {"per_minute": "10"}}, "rate_limits"),
    ({"rate_limits": {"per_week": 10}}, "rate_limits"),
    ({"api_key_expires_at": 1.0}, "api_key_expires_at"),
    ({"secret_sauce": 1}, "secret_sauce"),
]


@pytest.mark.parametrize(("fields", "where"), BAD_FIELDS)
async def test_invalid_configuration_is_refused(
    api: Api, fields: dict[str, Any], where: str
) -> None:
    answer = await api.post("/tenant", {"id": "acme", **fields}, expect=400)
    assert answer["ok"] is False and answer["code"] == "validation_error"
    assert any(d["field"].startswith(where) for d in answer["details"]), answer
    assert [t["id"] for t in (await api.get("/tenants"))["tenants"]] == ["default"]
    if where not in ("id", "api_key_expires_at"):  # the same check on update
        await create_tenant(api, "acme")
        answer = await api.call("PUT", "/tenant/acme", fields, expect=400)
        assert answer["code"] == "validation_error"


async def test_conflicts_and_missing_tenants(api: Api) -> None:
    await create_tenant(api, "acme")
    assert (await api.post("/tenant", {"id": "acme"}, expect=409))["code"] == "tenant_exists"
    assert (await api.post("/tenant", {"id": "default"}, expect=409))["code"] == "tenant_exists"
    gone = await api.call("DELETE", "/tenant/default", expect=409)
    assert gone["code"] == "default_tenant"
    # the default tenant can be shown and configured
    await api.call("PUT", "/tenant/default", {"client_base_url": "https://app.example.com"})
    assert (await api.get("/tenant/default"))["tenant"]["client_base_url"]
    for method, path in (
        ("GET", "/tenant/nope"),
        ("PUT", "/tenant/nope"),
        ("DELETE", "/tenant/nope"),
        ("POST", "/tenant/nope/api-key"),
        ("DELETE", "/tenant/nope/api-key"),
        ("POST", "/tenant/nope/sync-secret"),
    ):
        answer = await api.call(method, path, {} if method != "GET" else None, expect=404)
        assert answer["code"] == "tenant_not_found", (method, path)


async def test_api_key_rotation_expiry_and_revocation(api: Api) -> None:
    acme = await create_tenant(api, "acme")
    await as_tenant(api, acme, "GET", "/tenant/acme")
    # curl -X POST with no body (the FAQ's example) issues a new key
    resp = await api.client.post("/tenant/acme/api-key", headers=api.headers)
    rotated = await resp.json()
    assert resp.status == 200 and rotated["expires_at"] is None
    key2 = rotated["api_key"]
    assert key2 != acme.api_key and len(key2) == 43
    old = await as_tenant(api, acme, "GET", "/tenant/acme", expect=401)
    assert old["code"] == "invalid_token"
    await as_tenant(api, key2, "GET", "/tenant/acme")

    past = await api.post("/tenant/acme/api-key", {"expires_at": time.time() - 1}, expect=400)
    assert past["code"] == "validation_error"
    await as_tenant(api, key2, "GET", "/tenant/acme")  # a refused rotation changes nothing

    # 2 s: room for the calls below on a loaded machine before the key expires
    soon = await api.post("/tenant/acme/api-key", {"expires_at": time.time() + 2.0})
    await as_tenant(api, soon["api_key"], "GET", "/tenant/acme")
    assert (await api.get("/tenant/acme"))["tenant"]["api_key_expires_at"] == soon["expires_at"]
    await _until(lambda: time.time() > soon["expires_at"], timeout=10.0)
    expired = await as_tenant(api, soon["api_key"], "GET", "/tenant/acme", expect=401)
    assert expired["code"] == "token_expired"

    key3 = (await api.post("/tenant/acme/api-key"))["api_key"]
    await as_tenant(api, key3, "GET", "/messages")
    revoked = await api.call("DELETE", "/tenant/acme/api-key")
    assert revoked["revoked"] is True
    assert (await as_tenant(api, key3, "GET", "/messages", expect=401))["code"] == "invalid_token"
    assert (await api.get("/tenant/acme"))["tenant"]["has_api_key"] is False
    assert (await api.call("DELETE", "/tenant/acme/api-key"))["revoked"] is False


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_inactive_tenant_token_is_refused(api: Api) -> None:
    acme = await create_tenant(api, "acme")
    await api.call("PUT", "/tenant/acme", {"active": False})
    answer = await as_tenant(api, acme, "GET", "/messages", expect=403)
    assert answer["code"] == "tenant_inactive"
    await api.call("PUT", "/tenant/acme", {"active": True})
    await as_tenant(api, acme, "GET", "/messages")
    held = await create_tenant(api, "held", active=False)
    assert (await as_tenant(api, held, "GET", "/status", expect=403))["code"] == "tenant_inactive"


async def test_sync_secret_rotation(api: Api) -> None:
    acme = await create_tenant(api, "acme")
    answer = await api.post("/tenant/acme/sync-secret")
    assert answer["sync_secret"].startswith("whsec_") and answer["sync_secret"] != acme.sync_secret
    assert (await api.runtime.storage.get_tenant("acme")).sync_secret == answer["sync_secret"]
    assert (await as_tenant(api, acme, "POST", "/tenant/acme/sync-secret", {}, expect=403))[
        "code"
    ] == "admin_only"


async def test_list_is_paginated(api: Api) -> None:
    for n in range(5):
        await create_tenant(api, f"t{n}")
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await api.get("/tenants", params=params)
        assert len(page["tenants"]) <= 2
        seen += [t["id"] for t in page["tenants"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["default", "t0", "t1", "t2", "t3", "t4"]
    bad = await api.get("/tenants", params={"cursor": "garbage"}, expect=400)
    assert bad["code"] == "invalid_cursor"
    status = await api.get("/tenants/sync-status", params={"limit": "3"})
    assert [t["tenant_id"] for t in status["tenants"]] == ["default", "t0", "t1"]


async def test_sync_status_shows_targets_and_backlog(api: Api, tmp_path: Path) -> None:
    acme = await create_tenant(
        api, "acme", client_base_url="https://acme.example.com", client_sync_path="/hooks/mail"
    )
    await add_file_account(api, acme, "main", str(tmp_path / "out"))
    await as_tenant(api, acme, "POST", "/commands/add-messages", {"messages": [message("m1")]})
    await as_tenant(api, acme, "POST", "/commands/run-now", {})
    await _wait_sent(api, acme, "m1")

    async def status() -> dict[str, Any]:
        return {e["tenant_id"]: e for e in (await api.get("/tenants/sync-status"))["tenants"]}

    # the live view's backlog is the reporter's snapshot, refreshed on its next cycle after
    # the outcome's commit: wait (bounded) for it to count the "sent" event
    for _ in range(250):
        entries = await status()
        if entries["acme"]["backlog"] >= 1:
            break
        await asyncio.sleep(0.02)
    assert entries["acme"]["endpoint"] == "tenant"
    assert entries["acme"]["url"] == "https://acme.example.com/hooks/mail"
    assert entries["default"]["endpoint"] == "global" and entries["default"]["url"] is None
    # acme.example.com is refused by the address policy (or unreachable): reports wait
    assert entries["acme"]["backlog"] >= 1
    assert entries["default"]["backlog"] == 0


async def _wait_sent(api: Api, tenant: Any, msg_id: str) -> None:
    for _ in range(250):
        got = await as_tenant(api, tenant, "GET", f"/messages/{msg_id}")
        if got["message"]["status"] == "sent":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(got)


async def test_creating_a_tenant_needs_an_encryption_key(
    aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    api = await start_api(
        aiohttp_client_factory,
        make_settings,
        f"sqlite:///{tmp_path}/x.db",
        tmp_path,
        encryption_key=None,
    )
    answer = await api.post("/tenant", {"id": "acme"}, expect=400)
    assert answer["code"] == "encryption_key_missing"
    assert [t["id"] for t in (await api.get("/tenants"))["tenants"]] == ["default"]


async def test_delete_removes_everything_of_the_tenant_only(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    api = await start_api(
        aiohttp_client_factory,
        make_settings,
        db_url,
        tmp_path,
        cache_memory_item_max_kb=1.0,
        cache_disk_dir=str(tmp_path / "cache"),
    )
    rt = api.runtime
    small, large = b"small attachment", b"L" * 4096
    md5s = [hashlib.md5(small).hexdigest(), hashlib.md5(large).hexdigest()]
    atts = [
        {
            "filename": f"s_{{MD5:{md5s[0]}}}.txt",
            "storage_path": base64.b64encode(small).decode(),
            "fetch_mode": "base64",
        },
        {
            "filename": f"l_{{MD5:{md5s[1]}}}.txt",
            "storage_path": base64.b64encode(large).decode(),
            "fetch_mode": "base64",
        },
    ]
    gone = await create_tenant(api, "t_1")  # '_' is a LIKE wildcard: 'tx1' must survive
    keep = await create_tenant(api, "tx1")
    for tenant in (gone, keep):
        await add_file_account(api, tenant, "main", str(tmp_path / tenant.id), limit_per_day=1000)
        await as_tenant(
            api,
            tenant,
            "POST",
            "/commands/add-messages",
            {"messages": [message("m1", attachments=atts), message("m2")]},
        )
        await as_tenant(api, tenant, "POST", "/commands/run-now", {})
        await _wait_sent(api, tenant, "m1")
        await _wait_sent(api, tenant, "m2")
    await as_tenant(api, gone, "POST", "/commands/suspend", {"batch_code": "b1"})
    cache = get_resolver(rt).cache
    for tenant in (gone, keep):
        assert await cache.get(tenant.id, md5s[0]) == small
        assert await cache.get(tenant.id, md5s[1]) == large
    assert len(await asyncio.to_thread(_names, tmp_path / "cache", "*.bin")) == 2

    answer = await api.call("DELETE", "/tenant/t_1")
    assert answer == {"ok": True, "tenant_id": "t_1", "removed": True, "_status": 200}
    storage = rt.storage
    assert await storage.get_tenant("t_1") is None
    assert await storage.list_accounts("t_1") == []
    assert await storage.list_events("t_1", "m1") is None
    assert await storage.count_pending("t_1") == 0
    assert await storage.suspended_batches("t_1") == []
    assert (await storage.report_backlog()).get("t_1", 0) == 0
    assert await cache.get("t_1", md5s[0]) is None and await cache.get("t_1", md5s[1]) is None
    assert len(await asyncio.to_thread(_names, tmp_path / "cache", "*.bin")) == 1
    assert (await as_tenant(api, gone, "GET", "/messages", expect=401))["code"] == "invalid_token"
    assert await rt.local(TenantKeys).of_tenant("t_1") is None  # its key is deleted too
    assert (await api.get("/tenant/t_1", expect=404))["code"] == "tenant_not_found"

    # the other tenant, whose id matches 't_1' as a LIKE pattern, keeps everything
    ids = [m["id"] for m in (await as_tenant(api, keep, "GET", "/messages"))["messages"]]
    assert ids == ["m1", "m2"]
    assert len((await as_tenant(api, keep, "GET", "/accounts"))["accounts"]) == 1
    assert await cache.get("tx1", md5s[0]) == small and await cache.get("tx1", md5s[1]) == large
    # its rate-limit history too: 2 of the 1000 sends of the day are used
    granted = await storage.reserve_sends(
        "acct:tx1:main", 1000, time.time(), RateLimits(per_day=1000)
    )
    assert granted.granted == 998
