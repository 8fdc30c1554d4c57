"""``mail-proxy NAME tenants ...`` through the real script against a real running instance
(started once per module), checked against the REST API and with the keys it prints.

The instance and the CLI also load the test plugin :mod:`.probe_setting` (through its entry
point, from ``PYTHONPATH``), so ``--setting`` is tried with settings a plugin declares."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ee_multitenancy import probe_setting

from mail_proxy.core.testing.net import free_port
from support.cli_runner import MAIL_PROXY, Cli, http, run_in_pty

KEY_LINE = re.compile(r"API key \(shown only now[^\n]*\n\s+(\S+)")
SECRET_LINE = re.compile(r"Report signing secret \(shown only now[^\n]*\n\s+(\S+)")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    site = probe_setting.site_dir(tmp_path_factory.mktemp("site"))
    # the large-files plugin switched off: its setting stands for "a plugin not installed"
    cli = Cli(tmp_path_factory.mktemp("home"), PYTHONPATH=site, GMP_DISABLED_PLUGINS="large_files")
    cli.ok("start", "main", "--port", str(free_port()))
    yield cli
    cli.cleanup()


def rest(
    srv: Cli, method: str, path: str, token: str | None = None, body: Any = None, expect: int = 200
) -> Any:
    status, answer = http(method, srv.url("main") + path, token or srv.token("main"), body)
    assert status == expect, (status, answer)
    return answer


def test_add_as_in_the_faq_prints_the_key_once(srv: Cli) -> None:
    out = srv.ok(
        "main",
        "tenants",
        "add",
        "acme",
        "--name",
        "ACME Corp",
        "--base-url",
        "https://acme.com",
        "--sync-path",
        "/mail-proxy/sync",
    ).out
    assert "tenant 'acme' created" in out
    key = KEY_LINE.search(out).group(1)  # type: ignore[union-attr]
    secret = SECRET_LINE.search(out).group(1)  # type: ignore[union-attr]
    assert len(key) == 43 and secret.startswith("whsec_")
    tenant = rest(srv, "GET", "/tenant/acme", token=key)["tenant"]
    assert tenant["name"] == "ACME Corp" and tenant["client_base_url"] == "https://acme.com"
    assert tenant["client_sync_path"] == "/mail-proxy/sync"

    listed = srv.ok("main", "tenants", "list").out
    assert re.search(r"^acme\s+ACME Corp\s+yes\s+https://acme.com", listed, re.M), listed
    assert key not in listed
    as_json = srv.ok("main", "tenants", "list", "--json").json()
    assert as_json["tenants"] == rest(srv, "GET", "/tenants")["tenants"]
    shown = srv.ok("main", "tenants", "show", "acme").out
    assert "ACME Corp" in shown and key not in shown and secret not in shown
    assert srv.ok("main", "tenants", "show", "acme", "--json").json()["tenant"]["id"] == "acme"


def test_update_changes_only_what_is_given(srv: Cli) -> None:
    srv.ok("main", "tenants", "add", "upd", "--per-minute", "10", "--per-day", "500")
    srv.ok(
        "main",
        "tenants",
        "update",
        "upd",
        "--per-minute",
        "20",
        "--auth",
        "bearer",
        "--auth-token",
        "tok-cli-sentinel",
        "--name",
        "Updated",
    )
    tenant = rest(srv, "GET", "/tenant/upd")["tenant"]
    assert tenant["rate_limits"] == {"per_minute": 20, "per_hour": None, "per_day": 500}
    assert tenant["client_auth"] == {"method": "bearer", "has_secret": True}
    assert tenant["name"] == "Updated"
    srv.ok("main", "tenants", "update", "upd", "--clear", "auth", "--clear", "name")
    tenant = rest(srv, "GET", "/tenant/upd")["tenant"]
    assert tenant["client_auth"] is None and tenant["name"] is None
    assert tenant["rate_limits"]["per_day"] == 500
    nothing = srv("main", "tenants", "update", "upd")
    assert nothing.code == 2 and "nothing to change" in nothing.err
    bad = srv("main", "tenants", "update", "upd", "--base-url", "ftp://x.example.com")
    assert bad.code == 1 and "validation_error" in bad.err and "client_base_url" in bad.err


def test_api_key_rotation_revocation_and_deactivation(srv: Cli) -> None:
    key1 = KEY_LINE.search(srv.ok("main", "tenants", "add", "keys").out).group(1)  # type: ignore[union-attr]
    rest(srv, "GET", "/messages", token=key1)
    out = srv.ok("main", "tenants", "api-key", "keys", "--expires-in", "30").out
    key2 = KEY_LINE.search(out).group(1)  # type: ignore[union-attr]
    assert "expires" in out
    rest(srv, "GET", "/messages", token=key1, expect=401)
    rest(srv, "GET", "/messages", token=key2)
    assert rest(srv, "GET", "/tenant/keys")["tenant"]["api_key_expires_at"] is not None

    srv.ok("main", "tenants", "update", "keys", "--inactive")
    assert rest(srv, "GET", "/messages", token=key2, expect=403)["code"] == "tenant_inactive"
    srv.ok("main", "tenants", "update", "keys", "--active")
    rest(srv, "GET", "/messages", token=key2)

    as_json = srv.ok("main", "tenants", "api-key", "keys", "--json").json()
    key3 = as_json["api_key"]
    rest(srv, "GET", "/messages", token=key2, expect=401)
    assert "revoked" in srv.ok("main", "tenants", "api-key", "keys", "--revoke").out
    rest(srv, "GET", "/messages", token=key3, expect=401)


def test_delete_and_errors(srv: Cli) -> None:
    srv.ok("main", "tenants", "add", "gone")
    srv.ok("main", "tenants", "delete", "gone", "--yes")
    rest(srv, "GET", "/tenant/gone", expect=404)
    missing = srv("main", "tenants", "show", "gone")
    assert missing.code == 1 and "tenant_not_found" in missing.err
    again = srv("main", "tenants", "add", "acme2", "--name", "x")
    assert again.code == 0
    dup = srv("main", "tenants", "add", "acme2")
    assert dup.code == 1 and "tenant_exists" in dup.err
    no_id = srv("main", "tenants", "add")  # no terminal: the id is required
    assert no_id.code == 2 and "TENANT_ID" in no_id.err
    bad_auth = srv("main", "tenants", "add", "x1", "--auth", "bearer")
    assert bad_auth.code == 2 and "--auth-token" in bad_auth.err


def test_add_asks_for_missing_values_on_a_terminal(srv: Cli, tmp_path: Path) -> None:
    code, output = run_in_pty(
        [MAIL_PROXY, "main", "tenants", "add"],
        srv.env,
        [
            ("Tenant id:", "tty"),
            ("Name (Enter for none):", "Tty Corp"),
            ("Base URL of the tenant's application (Enter for none):", "https://tty.example.com"),
            ("Delivery-report path", ""),
            ("Auth to the tenant", "bearer"),
            ("Bearer token:", "tty-secret-token"),
        ],
    )
    assert code == 0, output
    assert "tenant 'tty' created" in output and "tty-secret-token" not in output
    tenant = rest(srv, "GET", "/tenant/tty")["tenant"]
    assert tenant["name"] == "Tty Corp" and tenant["client_base_url"] == "https://tty.example.com"
    assert tenant["client_auth"] == {"method": "bearer", "has_secret": True}


def test_plugin_settings_are_given_with_setting_and_shown(srv: Cli) -> None:
    secret = "cli-probe-Sentinel-3b7"
    note = '{"note": "from the CLI"}'
    srv.ok("main", "tenants", "add", "plug", "--setting", f"probe_note={note}")
    assert rest(srv, "GET", "/tenant/plug")["tenant"]["probe_note"] == {"note": "from the CLI"}
    config = json.dumps({"level": 4, "token": secret})
    out = srv.ok(
        "main", "tenants", "update", "plug", "--setting", f"probe_config={config}", "--name", "P"
    ).out
    assert "probe_config" in out
    shown = srv.ok("main", "tenants", "show", "plug").out
    assert re.search(r"^probe_config\s+.*\"level\": 4.*\"token_set\": true", shown, re.M), shown
    assert re.search(r"^probe_note\s+.*from the CLI", shown, re.M), shown
    assert secret not in shown
    assert secret not in srv.ok("main", "tenants", "show", "plug", "--json").out

    srv.ok("main", "tenants", "update", "plug", "--setting", "probe_note=null")
    assert rest(srv, "GET", "/tenant/plug")["tenant"]["probe_note"] is None

    # refused by the server: a value the plugin's model rejects, a plugin not installed
    bad = srv("main", "tenants", "update", "plug", "--setting", 'probe_config={"level": 0}')
    assert bad.code == 1 and "invalid_setting" in bad.err and "probe_config.level" in bad.err
    missing = srv("main", "tenants", "update", "plug", "--setting", "large_file_config={}")
    assert missing.code == 1 and "plugin_not_installed" in missing.err
    assert "large-files plugin" in missing.err
    # refused by the CLI
    for arg in ("probe_note", "probe_note={not json", "=1"):
        usage = srv("main", "tenants", "update", "plug", "--setting", arg)
        assert usage.code == 2 and "--setting" in usage.err, usage
    twice = srv("main", "tenants", "add", "p2", "--name", "x", "--setting", 'name="y"')
    assert twice.code == 2 and "given twice" in twice.err
    assert rest(srv, "GET", "/tenant/plug")["tenant"]["probe_config"]["level"] == 4
