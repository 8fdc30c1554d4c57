"""POST /account, GET /accounts, DELETE /account/{id}: validation, secrets, delete policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.core.engine.encryption import account_password_context
from mail_proxy.core.web.app import RUNTIME
from support.ce_api import Api, message, start_api

SENTINEL = "s3ntinel-Passw0rd-never-shown"


SMTP = {
    "id": "smtp1",
    "host": "smtp.example.com",
    "port": 465,
    "user": "me",
    "password": SENTINEL,
    "limit_per_minute": 10,
    "limit_behavior": "reject",
}


async def test_add_list_update_without_secrets(api: Api) -> None:
    answer = await api.post("/account", SMTP)
    account = answer["account"]
    assert account["id"] == "smtp1" and account["tenant_id"] == "default"
    assert account["has_password"] is True and account["transport"] == "smtp"
    assert account["port"] == 465 and account["limit_per_minute"] == 10
    assert account["limit_behavior"] == "reject" and account["default"] is False
    assert "password" not in account and "password_enc" not in account

    listed = await api.get("/accounts")
    assert [a["id"] for a in listed["accounts"]] == ["smtp1"]
    assert SENTINEL not in json.dumps(listed) and SENTINEL not in json.dumps(answer)

    # stored encrypted, never in clear
    stored = await api.runtime.storage.get_account("default", "smtp1")
    assert stored.password_enc and SENTINEL not in stored.password_enc
    place = account_password_context("default", "smtp1")
    assert api.runtime.decrypt(stored.password_enc, place) == SENTINEL

    # an update without "password" keeps it; null removes it
    update = {k: v for k, v in SMTP.items() if k != "password"} | {"port": 587}
    answer = await api.post("/account", update)
    assert answer["account"]["has_password"] is True and answer["account"]["port"] == 587
    answer = await api.post("/account", update | {"password": None})
    assert answer["account"]["has_password"] is False

    # the command log records the call but not the secret
    log = await api.get("/command-log")
    assert any(e["path"] == "/account" for e in log["entries"])
    assert SENTINEL not in json.dumps(log)


#: (fields changed in a valid account, the documented error code)
BAD_ACCOUNTS: list[tuple[dict[str, Any], str]] = [
    ({"port": 0}, "validation_error"),
    ({"port": 70000}, "validation_error"),
    ({"limit_per_hour": -1}, "validation_error"),
    ({"limit_behavior": "drop"}, "validation_error"),
    ({"host": "bad host!"}, "invalid_host"),
    ({"host": ""}, "invalid_host"),
    ({"transport": "pigeon"}, "unknown_transport"),
    ({"id": "a/b"}, "validation_error"),
    ({"id": None}, "validation_error"),
    ({"secret_sauce": 1}, "validation_error"),
    ({"port": "587"}, "validation_error"),
    ({"user": "me\r\nX: y"}, "invalid_user"),
]


async def test_connection_settings_round_trip(api: Api) -> None:
    plain = (await api.post("/account", {"id": "plain", "host": "smtp.example.com"}))["account"]
    assert (plain["max_connections"], plain["message_timeout"], plain["timeout"]) == (10, 120, 30)
    assert plain["allow_plaintext_auth"] is False
    relay = {
        "id": "relay",
        "host": "10.0.0.5",
        "port": 25,
        "user": "me",
        "max_connections": 50,
        "timeout": 20.0,
        "message_timeout": 600.0,
        "allow_plaintext_auth": True,
    }
    answer = (await api.post("/account", relay))["account"]
    assert answer["max_connections"] == 50 and answer["allow_plaintext_auth"] is True
    stored = await api.runtime.storage.get_account("default", "relay")
    assert (stored.max_connections, stored.timeout, stored.message_timeout) == (50, 20.0, 600.0)
    assert stored.allow_plaintext_auth is True


async def test_the_dispatcher_uses_a_saved_account_at_once(api: Api) -> None:
    """The dispatcher keeps accounts for a couple of seconds; saving or deleting one through
    the API drops the tenant's entries (tenant_changed), so the next round reads it anew."""
    from mail_proxy.core.engine.dispatcher import DeliveryLookups

    lookups = api.runtime.local(DeliveryLookups)
    await api.post("/account", {"id": "relay", "host": "smtp.example.com", "max_connections": 5})
    assert (await lookups.account("default", "relay")).max_connections == 5  # now cached
    await api.post("/account", {"id": "relay", "host": "smtp.example.com", "max_connections": 40})
    assert (await lookups.account("default", "relay")).max_connections == 40
    await api.call("DELETE", "/account/relay")
    assert await lookups.account("default", "relay") is None


async def test_status_lists_accounts_allowed_to_authenticate_in_clear_text(api: Api) -> None:
    await api.post("/account", {"id": "plain", "host": "smtp.example.com", "user": "me"})
    assert (await api.get("/status"))["plaintext_auth_accounts"] == []
    relay = {"id": "relay", "host": "10.0.0.5", "user": "me", "allow_plaintext_auth": True}
    await api.post("/account", relay)
    # an operator sees every account allowed to send its password in clear text
    status = await api.get("/status")
    assert status["plaintext_auth_accounts"] == [{"tenant_id": "default", "id": "relay"}]


async def test_invalid_accounts(api: Api) -> None:
    for fields, code in BAD_ACCOUNTS:
        body = {k: v for k, v in (SMTP | fields).items() if v is not None}
        answer = await api.post("/account", body, expect=400)
        assert answer["ok"] is False and answer["code"] == code, fields
    assert (await api.get("/accounts"))["accounts"] == []


async def test_password_needs_an_encryption_key(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    key_dir = tmp_path / "nokey"
    key_dir.mkdir()
    api = await start_api(
        aiohttp_client_factory,
        make_settings,
        db_url,
        tmp_path,
        encryption_key=None,
        instance_dir=str(key_dir),
    )
    if api.runtime.cipher is not None:  # a key from /run/secrets on this machine
        pytest.skip("an encryption key is configured outside the test")
    answer = await api.post("/account", SMTP, expect=400)
    assert answer["code"] == "encryption_key_missing"
    assert (await api.get("/accounts"))["accounts"] == []
    # without a password it works
    await api.post("/account", {k: v for k, v in SMTP.items() if k != "password"})


async def test_one_default_account(api: Api) -> None:
    await api.add_account("a", default=True)
    await api.add_account("b", default=True)
    accounts = {a["id"]: a["default"] for a in (await api.get("/accounts"))["accounts"]}
    assert accounts == {"a": False, "b": True}
    await api.send(message("m1"))
    assert (await api.get("/messages/m1"))["message"]["account_id"] == "b"


async def test_delete_refused_while_messages_are_queued(api: Api) -> None:
    await api.add_account("main")
    await api.send(message("m1"))
    answer = await api.call("DELETE", "/account/main", expect=409)
    assert answer["code"] == "account_has_messages" and answer["active_messages"] == 1
    assert [a["id"] for a in (await api.get("/accounts"))["accounts"]] == ["main"]

    await api.post("/commands/delete-messages", {"ids": ["m1"]})
    answer = await api.call("DELETE", "/account/main")
    assert answer["ok"] is True
    assert (await api.get("/accounts"))["accounts"] == []
    # the cache of the enqueue path forgets it at once
    rejected = await api.send(message("m2", account_id="main"))
    assert rejected["rejected"][0]["reason"] == "unknown account"


async def test_delete_unknown_account_is_404(api: Api) -> None:
    answer = await api.call("DELETE", "/account/ghost", expect=404)
    assert answer["code"] == "account_not_found"


async def test_new_account_usable_at_once(api: Api) -> None:
    """The enqueue path caches accounts; a just-added account must still be found."""
    await api.add_account("first")
    await api.send(message("m1"))  # fills the cache
    await api.add_account("second", default=False)
    answer = await api.send(message("m2", account_id="second"))
    assert answer["queued"] == 1


async def test_only_the_admin_configures_file_accounts(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    """The file transport writes where the service may write: a tenant's token cannot
    create or change such an account (it could name any directory); the admin's can."""
    from mail_proxy.core.testing.reports import TENANT_TOKEN, plugins_with_tenant_tokens

    client = await aiohttp_client_factory(
        make_settings(database_url=db_url, test_mode=True), plugins=plugins_with_tenant_tokens()
    )
    target = tmp_path / "elsewhere"
    body = {"id": "files", "transport": "file", "options": {"directory": str(target)}}
    resp = await client.post("/account", json=body, headers={"X-API-Token": TENANT_TOKEN})
    answer = await resp.json()
    assert resp.status == 403 and answer["code"] == "admin_only", answer
    assert "admin token" in answer["error"]
    rt = client.server.app[RUNTIME]
    assert await rt.storage.get_account("default", "files") is None
    assert not target.exists()
    # the tenant's own SMTP accounts are unaffected; the admin may add the file account
    smtp = {"id": "smtp1", "host": "smtp.example.com", "port": 587}
    resp = await client.post("/account", json=smtp, headers={"X-API-Token": TENANT_TOKEN})
    assert resp.status == 200, await resp.text()
    resp = await client.post("/account", json=body, headers=client.admin_headers)
    assert resp.status == 200, await resp.text()
    # ... and a tenant cannot then turn its SMTP account into a file account either
    moved = {**smtp, "transport": "file", "options": {"directory": str(target)}}
    resp = await client.post("/account", json=moved, headers={"X-API-Token": TENANT_TOKEN})
    assert resp.status == 403
