"""Key rotation below the CLI: ``Storage.reencrypt_secrets`` on SQLite and PostgreSQL,
``Runtime.rotate_key`` and ``POST /instance/rotate-key`` on the real app.

The stored values are read back with plain SQL and decrypted with :class:`Cipher` directly,
so the tests see what is really in the database, not what the storage layer reports. Each
value is bound to its place (table, column, row key: AES-GCM associated data): a value moved
to another row does not decrypt, and the startup upgrade binds legacy (``gcm1:``) tokens.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mail_proxy.ce.storage import schema as t
from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.contracts.model import Account, NewMessage, Tenant
from mail_proxy.core.engine.encryption import (
    Cipher,
    EncryptionError,
    account_password_context,
    attachment_auth_context,
    generate_key,
    load_key,
    parse_key,
    tenant_secret_context,
)
from mail_proxy.core.engine.runtime import (
    KEY_CHECK_CONTEXT,
    KEY_CHECK_PLAINTEXT,
    KEY_CHECK_SETTING,
    SECRETS_FORMAT_SETTING,
)
from support.ce_api import Api


def cipher_of(store: SqlStorage) -> Cipher:
    assert store.runtime is not None and store.runtime.cipher is not None
    return store.runtime.cipher


def legacy(store: SqlStorage) -> Any:
    """An encrypt function writing the legacy ``gcm1:`` format (no associated data) with the
    storage's key, as versions before the binding did: ``encrypt(plaintext, place)``."""
    assert store.runtime is not None
    found = load_key(store.runtime.settings.encryption_key, store.runtime.settings.instance_dir)
    assert found is not None
    aead = AESGCM(found[0])

    def encrypt(plaintext: str, place: str) -> str:
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, plaintext.encode(), None)
        return "gcm1:" + base64.b64encode(nonce + sealed).decode()

    return encrypt


async def fill(store: SqlStorage, encrypt: Any = None) -> None:
    """Two accounts (one without password), a tenant with both secrets, one without any,
    the key check value and a queued message with sealed attachment credentials; every
    secret encrypted with ``encrypt(plaintext, place)`` (the storage's cipher by default)."""
    encrypt = encrypt or cipher_of(store).encrypt
    await store.save_account(
        Account(
            "default",
            "pw",
            "smtp.example.com",
            587,
            "u",
            password_enc=encrypt("smtp-secret", PLACES["account:pw"]),
        )
    )
    await store.save_account(Account("default", "nopw", "smtp.example.com", 587))
    await store.save_tenant(
        Tenant(
            "acme", "ACME", client_auth={"method": "bearer", "token": "tok-1"}, sync_secret="sync-1"
        )
    )
    if encrypt is not cipher_of(store).encrypt:  # the storage sealed them with its cipher
        async with store.engine.begin() as conn:
            await conn.execute(
                t.tenants.update()
                .where(t.tenants.c.id == "acme")
                .values(
                    client_auth_enc=encrypt(PLAINTEXTS["auth:acme"], PLACES["auth:acme"]),
                    sync_secret_enc=encrypt("sync-1", PLACES["secret:acme"]),
                )
            )
    await store.save_tenant(Tenant("plain", "Plain"))
    await store.put_settings({KEY_CHECK_SETTING: encrypt(KEY_CHECK_PLAINTEXT, KEY_CHECK_CONTEXT)})
    # a queued message whose attachment credentials were sealed at enqueue (seal_auth)
    sealed = {
        "filename": "a.pdf",
        "storage_path": "https://files.example.com/a.pdf",
        "auth_enc": encrypt(ATTACHMENT_AUTH, PLACES["attachment:queued"]),
    }
    unsealed = {"filename": "b.pdf", "storage_path": "https://files.example.com/b.pdf"}
    payload = {"from": "a@example.com", "to": ["b@example.com"], "attachments": [sealed, unsealed]}
    await store.enqueue(
        [NewMessage("default", "queued", "pw", 1, payload, "<queued@example.com>")], time.time()
    )


ATTACHMENT_AUTH = json.dumps({"method": "bearer", "token": "att-1"})


async def raw_values(store: SqlStorage) -> dict[str, str | None]:
    """Every encrypted column as stored, by a readable name."""
    out: dict[str, str | None] = {}
    async with store.engine.connect() as conn:
        for row in await conn.execute(sa.select(t.accounts.c.id, t.accounts.c.password_enc)):
            out[f"account:{row.id}"] = row.password_enc
        for tenant in await conn.execute(
            sa.select(t.tenants.c.id, t.tenants.c.client_auth_enc, t.tenants.c.sync_secret_enc)
        ):
            out[f"auth:{tenant.id}"] = tenant.client_auth_enc
            out[f"secret:{tenant.id}"] = tenant.sync_secret_enc
        payload = await conn.scalar(sa.select(t.messages.c.payload))
        out["attachment:queued"] = payload["attachments"][0]["auth_enc"]
        out["check"] = await conn.scalar(
            sa.select(t.instance_settings.c.value).where(
                t.instance_settings.c.key == KEY_CHECK_SETTING
            )
        )
    return out


PLAINTEXTS = {
    "account:pw": "smtp-secret",
    "auth:acme": json.dumps({"method": "bearer", "token": "tok-1"}),
    "secret:acme": "sync-1",
    "check": KEY_CHECK_PLAINTEXT,
    "attachment:queued": ATTACHMENT_AUTH,
}
PLACES = {
    "account:pw": account_password_context("default", "pw"),
    "auth:acme": tenant_secret_context("client_auth_enc", "acme"),
    "secret:acme": tenant_secret_context("sync_secret_enc", "acme"),
    "check": KEY_CHECK_CONTEXT,
    "attachment:queued": attachment_auth_context("default", "queued"),
}
EMPTY = ("account:nopw", "auth:default", "secret:default", "auth:plain", "secret:plain")


async def test_reencrypt_rewrites_every_encrypted_value(storage: SqlStorage) -> None:
    await fill(storage)
    old, new = cipher_of(storage), Cipher(parse_key(generate_key()))
    changed = await storage.reencrypt_secrets(
        lambda tok, place: new.encrypt(old.decrypt(tok, place), place)
    )
    assert changed == len(PLAINTEXTS)
    stored = await raw_values(storage)
    for name, plain in PLAINTEXTS.items():
        token = stored[name]
        assert token is not None and new.decrypt(token, PLACES[name]) == plain, name
        with pytest.raises(EncryptionError):
            old.decrypt(token, PLACES[name])
    assert all(stored[name] is None for name in EMPTY)  # nothing invented for empty values


async def test_a_failing_value_rolls_everything_back(storage: SqlStorage) -> None:
    await fill(storage)
    before = await raw_values(storage)
    old, new = cipher_of(storage), Cipher(parse_key(generate_key()))
    seen: list[str] = []

    def transform(token: str, place: str) -> str:
        seen.append(token)
        if len(seen) == len(PLAINTEXTS):  # the last value, after all the others
            raise EncryptionError("boom")
        return new.encrypt(old.decrypt(token, place), place)

    with pytest.raises(EncryptionError):
        await storage.reencrypt_secrets(transform)
    assert len(seen) == len(PLAINTEXTS)
    assert await raw_values(storage) == before


async def test_an_identity_transform_changes_nothing(storage: SqlStorage) -> None:
    await fill(storage)
    before = await raw_values(storage)
    assert await storage.reencrypt_secrets(lambda tok, place: tok) == 0
    assert await raw_values(storage) == before


async def test_runtime_rotate_key_swaps_the_cipher_and_keeps_old_tokens_readable(
    storage: SqlStorage,
) -> None:
    await fill(storage)
    rt = storage.runtime
    assert rt is not None and rt.cipher is not None
    old = rt.cipher
    cached = await storage.get_account("default", "pw")
    assert cached is not None and cached.password_enc is not None  # read before the rotation
    new_key = parse_key(generate_key())

    assert await rt.rotate_key(new_key) == len(PLAINTEXTS)
    assert rt.cipher is not old
    # a token read before the swap (the dispatcher caches accounts) still decrypts here...
    assert rt.decrypt(cached.password_enc, PLACES["account:pw"]) == "smtp-secret"
    # ...but the database holds only values of the new key
    stored = await raw_values(storage)
    fresh = Cipher(new_key)
    assert all(fresh.decrypt(stored[n] or "", PLACES[n]) == p for n, p in PLAINTEXTS.items())
    tenant = await storage.get_tenant("acme")
    assert tenant is not None and tenant.sync_secret == "sync-1"
    assert tenant.client_auth == {"method": "bearer", "token": "tok-1"}
    # new secrets are encrypted with the new key
    assert fresh.decrypt(rt.encrypt("later", PLACES["account:pw"]), PLACES["account:pw"]) == "later"


async def test_runtime_rotate_key_refuses_a_database_it_cannot_decrypt(
    storage: SqlStorage,
) -> None:
    await fill(storage)
    foreign = Cipher(parse_key(generate_key()))
    await storage.save_account(
        Account(
            "default",
            "alien",
            "smtp.example.com",
            587,
            "u",
            password_enc=foreign.encrypt("x", account_password_context("default", "alien")),
        )
    )
    rt = storage.runtime
    assert rt is not None
    old = rt.cipher
    before = await raw_values(storage)
    with pytest.raises(EncryptionError):
        await rt.rotate_key(parse_key(generate_key()))
    assert rt.cipher is old
    assert await raw_values(storage) == before


# -- the route ----------------------------------------------------------------------------------


async def test_route_rotates_and_never_echoes_the_key(api: Api) -> None:
    await api.add_account("main", password="smtp-secret")
    rt = api.runtime
    old = rt.cipher
    new_key = generate_key()
    answer = await api.post("/instance/rotate-key", {"new_key": new_key})
    assert answer["ok"] is True and answer["reencrypted"] == 2  # password + key check
    assert answer["key_source"] == "MAIL_PROXY_ENCRYPTION_KEY"
    assert new_key not in json.dumps(answer)

    account = await rt.storage.get_account("default", "main")
    fresh = Cipher(parse_key(new_key))
    place = account_password_context("default", "main")
    assert fresh.decrypt(account.password_enc, place) == "smtp-secret"
    with pytest.raises(EncryptionError):
        old.decrypt(account.password_enc, place)

    log = await api.get("/command-log")
    entry = next(e for e in log["entries"] if e["path"] == "/instance/rotate-key")
    assert entry["status"] == 200 and entry["summary"] == {"reencrypted": 2}
    assert new_key not in json.dumps(log)
    # rotating again works from the new key
    again = await api.post("/instance/rotate-key", {"new_key": generate_key()})
    assert again["reencrypted"] == 2


@pytest.mark.parametrize(
    "bad",
    ["not base64!", base64.b64encode(b"short").decode(), base64.b64encode(b"x" * 33).decode()],
)
async def test_route_invalid_key_is_400_and_not_echoed(api: Api, bad: str) -> None:
    await api.add_account("main", password="smtp-secret")
    before = (await api.runtime.storage.get_account("default", "main")).password_enc
    answer = await api.post("/instance/rotate-key", {"new_key": bad}, expect=400)
    assert answer["code"] == "invalid_key"
    assert bad not in json.dumps(answer)
    assert (await api.runtime.storage.get_account("default", "main")).password_enc == before


async def test_route_body_is_validated_and_admin_only(api: Api) -> None:
    missing = await api.post("/instance/rotate-key", {}, expect=400)
    assert missing["code"] == "validation_error"
    extra = await api.post("/instance/rotate-key", {"new_key": generate_key(), "x": 1}, expect=400)
    assert extra["code"] == "validation_error"
    anonymous = await api.call(
        "POST",
        "/instance/rotate-key",
        {"new_key": generate_key()},
        headers={"X-API-Token": "wrong"},
        expect=401,
    )
    assert anonymous["code"] == "invalid_token"


async def test_route_key_mismatch_is_409_and_changes_nothing(api: Api) -> None:
    await api.add_account("main", password="smtp-secret")
    foreign = Cipher(parse_key(generate_key()))
    await api.runtime.storage.save_account(
        Account(
            "default",
            "alien",
            "smtp.example.com",
            587,
            "u",
            password_enc=foreign.encrypt("x", account_password_context("default", "alien")),
        )
    )
    old = api.runtime.cipher
    answer = await api.post("/instance/rotate-key", {"new_key": generate_key()}, expect=409)
    assert answer["code"] == "key_mismatch"
    assert api.runtime.cipher is old
    account = await api.runtime.storage.get_account("default", "main")
    assert old.decrypt(account.password_enc, account_password_context("default", "main")) == (
        "smtp-secret"
    )


# -- every secret bound to its place -----------------------------------------------------------


async def test_a_secret_moved_to_another_row_does_not_decrypt(storage: SqlStorage) -> None:
    """Swap two accounts' passwords and two tenants' secrets in the database itself: each
    value is still a valid token of the right key, and none opens where it now is."""
    await fill(storage)
    rt = storage.runtime
    assert rt is not None
    other = account_password_context("default", "pw2")
    await storage.save_account(
        Account(
            "default", "pw2", "smtp.example.com", 587, "u", password_enc=rt.encrypt("two", other)
        )
    )
    await storage.save_tenant(Tenant("beta", "Beta", sync_secret="sync-2"))
    a, c = t.accounts.c, t.tenants.c
    async with storage.engine.begin() as conn:
        rows = dict((await conn.execute(sa.select(a.id, a.password_enc))).all())
        for account_id, new in (("pw", rows["pw2"]), ("pw2", rows["pw"])):
            await conn.execute(
                t.accounts.update().where(a.id == account_id).values(password_enc=new)
            )
        secrets = dict((await conn.execute(sa.select(c.id, c.sync_secret_enc))).all())
        for tenant_id, new in (("acme", secrets["beta"]), ("beta", secrets["acme"])):
            await conn.execute(
                t.tenants.update().where(c.id == tenant_id).values(sync_secret_enc=new)
            )

    for account_id in ("pw", "pw2"):
        account = await storage.get_account("default", account_id)
        assert account is not None and account.password_enc is not None
        with pytest.raises(EncryptionError, match="another row"):
            rt.decrypt(account.password_enc, account_password_context("default", account_id))
    for tenant_id in ("acme", "beta"):
        with pytest.raises(EncryptionError, match="another row"):
            await storage.get_tenant(tenant_id)
    # copied to another tenant's account of the same id: refused as well
    account = await storage.get_account("default", "pw")
    assert account is not None and account.password_enc is not None
    with pytest.raises(EncryptionError):
        rt.decrypt(account.password_enc, account_password_context("acme", "pw2"))


async def test_startup_upgrade_binds_legacy_tokens_once(storage: SqlStorage) -> None:
    """A database written before the binding (``gcm1:`` tokens everywhere, no
    ``secrets_format``): the upgrade re-encrypts each value for its place in one pass,
    records the format, and is a no-op afterwards; a legacy token planted later is refused."""
    rt = storage.runtime
    assert rt is not None
    old_style = legacy(storage)
    await fill(storage, old_style)
    assert all((v or "").startswith("gcm1:") for v in (await raw_values(storage)).values() if v)

    assert await rt.upgrade_secrets() == len(PLAINTEXTS)
    stored = await raw_values(storage)
    cipher = cipher_of(storage)
    for name, plain in PLAINTEXTS.items():
        token = stored[name] or ""
        assert token.startswith("gcm2:") and cipher.decrypt(token, PLACES[name]) == plain, name
    assert (await storage.get_settings())[SECRETS_FORMAT_SETTING] == 2
    assert await rt.upgrade_secrets() == 0  # recorded: not scanned again
    assert await raw_values(storage) == stored

    tenant = await storage.get_tenant("acme")
    assert tenant is not None and tenant.sync_secret == "sync-1"
    planted = old_style("smtp-secret", PLACES["account:pw"])
    with pytest.raises(EncryptionError, match="legacy format"):
        rt.decrypt(planted, PLACES["account:pw"])
