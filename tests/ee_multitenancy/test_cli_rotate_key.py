"""``mail-proxy NAME rotate-key`` through the real script against a real running instance.

Accounts authenticate to a real SMTP server (AUTH required), so "still sends" means the
server decrypted the password; the SQLite file is then read directly and every stored
secret is tried with the old and the new key. It lives with the multitenancy tests because a
tenant's client_auth secret is among the values rotated; the Community Edition part is
covered without the plugin by tests/ce/test_key_rotation.py. CLI calls run in a worker thread: the SMTP
server lives in this test's event loop and must keep answering while a command runs.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mail_proxy.core.engine.encryption import (
    Cipher,
    EncryptionError,
    account_password_context,
    generate_key,
    parse_key,
    tenant_secret_context,
)
from mail_proxy.core.engine.runtime import KEY_CHECK_CONTEXT, KEY_CHECK_PLAINTEXT, KEY_CHECK_SETTING
from mail_proxy.core.testing.net import free_port
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.cli_runner import Cli, Result, http

SMTP_AUTH = ("user", "pw")
TENANTS = ("default", "acme")


async def run(cli: Cli, *args: str) -> Result:
    return await asyncio.to_thread(cli.ok, *args)


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpTestServer]:
    async with SmtpTestServer(auth=SMTP_AUTH, auth_require_tls=False) as server:
        yield server


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path / "home")
    yield cli
    cli.cleanup()


def eml(directory: Path, name: str) -> str:
    m = EmailMessage()
    m["From"] = "sender@example.com"
    m["To"] = "rcpt@example.org"
    m["Subject"] = name
    m["Message-ID"] = f"<{name}@example.com>"
    m.set_content(f"body of {name}")
    path = directory / f"{name}.eml"
    path.write_bytes(bytes(m))
    return str(path)


async def deliver(
    cli: Cli, smtp: SmtpTestServer, tmp_path: Path, tag: str, tenants: tuple[str, ...] = TENANTS
) -> None:
    """Send one message per tenant's account; each arrives, authenticated."""
    first_new = len(smtp.messages)
    for tenant in tenants:
        await run(cli, "main", tenant, "send", eml(tmp_path, f"{tenant}-{tag}"))
    for _ in range(400):
        if len(smtp.messages) >= first_new + len(tenants):
            break
        await asyncio.sleep(0.05)
    got = smtp.messages[first_new:]
    assert sorted(str(m.message["Subject"]) for m in got) == sorted(f"{t}-{tag}" for t in tenants)
    assert all(m.authenticated_as == SMTP_AUTH[0] for m in got)


def stored_secrets(db: Path) -> dict[str, str]:
    """Every encrypted value in the SQLite file, read with plain sqlite3."""
    out: dict[str, str] = {}
    with sqlite3.connect(db) as conn:
        for tenant, account, token in conn.execute(
            "SELECT tenant_id, id, password_enc FROM accounts WHERE password_enc IS NOT NULL"
        ):
            out[f"password:{tenant}/{account}"] = token
        for tenant, auth, secret in conn.execute(
            "SELECT id, client_auth_enc, sync_secret_enc FROM tenants"
        ):
            if auth:
                out[f"auth:{tenant}"] = auth
            if secret:
                out[f"secret:{tenant}"] = secret
        (check,) = conn.execute(
            "SELECT value FROM instance_settings WHERE key = ?", (KEY_CHECK_SETTING,)
        ).fetchone()
        out["check"] = json.loads(check)
    return out


def place_of(name: str) -> str:
    """The encryption context of a :func:`stored_secrets` entry (where it is stored)."""
    kind, _, where = name.partition(":")
    if kind == "password":
        tenant, account = where.split("/")
        return account_password_context(tenant, account)
    if kind in ("auth", "secret"):
        column = "client_auth_enc" if kind == "auth" else "sync_secret_enc"
        return tenant_secret_context(column, where)
    return KEY_CHECK_CONTEXT


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def setup_instance(
    cli: Cli, smtp: SmtpTestServer, tenants: tuple[str, ...] = TENANTS
) -> None:
    """Start ``main``; tenant ``acme`` gets a bearer ``client_auth`` (and a signing secret);
    each tenant gets an SMTP account with a password."""
    await run(cli, "start", "main", "--port", str(free_port()))
    if "acme" in tenants:
        await run(
            cli, "main", "tenants", "add", "acme", "--auth", "bearer", "--auth-token", "tok-9"
        )
    for tenant in tenants:
        await run(
            cli,
            "main",
            tenant,
            "accounts",
            "add",
            "smtp1",
            "--host",
            "127.0.0.1",
            "--port",
            str(smtp.port),
            "--user",
            SMTP_AUTH[0],
            "--password",
            SMTP_AUTH[1],
            "--no-starttls",
            "--allow-plaintext-auth",  # the test server offers no TLS
            "--default",
        )


async def test_rotate_key_live_then_restart(cli: Cli, smtp: SmtpTestServer, tmp_path: Path) -> None:
    await setup_instance(cli, smtp)
    inst = cli.home / "main"
    key_file = inst / "encryption.key"
    old_key = key_file.read_text().strip()
    await deliver(cli, smtp, tmp_path, "before")
    before = stored_secrets(inst / "mail_proxy.db")
    assert {"password:default/smtp1", "password:acme/smtp1", "auth:acme", "check"} <= set(before)

    result = await run(cli, "main", "rotate-key")
    new_key = key_file.read_text().strip()
    assert new_key != old_key and len(parse_key(new_key)) == 32
    assert (inst / "encryption.key.old").read_text().strip() == old_key
    assert mode(key_file) == mode(inst / "encryption.key.old") == 0o600
    assert not (inst / "encryption.key.new").exists()
    assert "re-encrypting stored secrets" in result.err
    assert f"done: {len(before)} stored value(s) re-encrypted" in result.err
    assert new_key not in result.out + result.err  # the key file holds it; never printed

    # the database: only the new key decrypts, to the same plaintexts
    after = stored_secrets(inst / "mail_proxy.db")
    assert set(after) == set(before)
    old, new = Cipher(parse_key(old_key)), Cipher(parse_key(new_key))
    for name, token in after.items():
        with pytest.raises(EncryptionError):
            old.decrypt(token, place_of(name))
        assert new.decrypt(token, place_of(name)) == old.decrypt(before[name], place_of(name))
    acme = "password:acme/smtp1"
    assert new.decrypt(after[acme], place_of(acme)) == SMTP_AUTH[1]
    assert new.decrypt(after["check"], KEY_CHECK_CONTEXT) == KEY_CHECK_PLAINTEXT

    # the running instance still sends without a restart (fresh connections: AUTH again)
    smtp.drop_all_connections()
    await smtp.wait_until(lambda: not smtp.open_connections)
    logins = len(smtp.auth_attempts)
    await deliver(cli, smtp, tmp_path, "rotated")
    assert len(smtp.auth_attempts) > logins

    # the key appears in no answer, log or audit entry
    status, log = http("GET", cli.url("main") + "/command-log", cli.token("main"))
    assert status == 200
    rotation = [e for e in log["entries"] if e["path"] == "/instance/rotate-key"]
    assert rotation and rotation[0]["summary"] == {"reencrypted": len(before)}
    logs = "".join(p.read_text() for p in (inst / "logs").iterdir())
    for key in (old_key, new_key):
        assert key not in json.dumps(log) and key not in logs

    # after a restart the instance reads the new key file and still sends
    await run(cli, "restart", "main")
    await deliver(cli, smtp, tmp_path, "restarted")


async def test_key_from_the_environment_is_printed_once(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    old_key = generate_key()
    cli = Cli(tmp_path / "home", MAIL_PROXY_ENCRYPTION_KEY=old_key)
    try:
        await setup_instance(cli, smtp, ("default",))
        inst = cli.home / "main"
        file_key = (inst / "encryption.key").read_text()  # created by start, not used

        result = await run(cli, "main", "rotate-key")
        new_key = result.out.strip()
        assert len(parse_key(new_key)) == 32 and new_key != old_key
        assert "MAIL_PROXY_ENCRYPTION_KEY" in result.err and "before the next restart" in result.err
        assert (inst / "encryption.key").read_text() == file_key  # not the key's source
        assert not (inst / "encryption.key.old").exists()
        assert not (inst / "encryption.key.new").exists()
        new = Cipher(parse_key(new_key))
        stored = stored_secrets(inst / "mail_proxy.db")
        smtp1 = "password:default/smtp1"
        assert new.decrypt(stored[smtp1], place_of(smtp1)) == SMTP_AUTH[1]

        # a restart with the stale variable is refused, naming the problem
        await asyncio.to_thread(cli.ok, "stop", "main")
        stale = await asyncio.to_thread(cli, "start", "main")
        assert stale.code == 1 and "not the key this database was encrypted with" in stale.err
        cli.env["MAIL_PROXY_ENCRYPTION_KEY"] = new_key
        await run(cli, "start", "main")
        await deliver(cli, smtp, tmp_path, "env", ("default",))
    finally:
        cli.cleanup()


async def test_refused_and_unfinished_rotations(
    cli: Cli, smtp: SmtpTestServer, tmp_path: Path
) -> None:
    await setup_instance(cli, smtp)
    inst = cli.home / "main"
    key = (inst / "encryption.key").read_text()

    # a value the current key cannot decrypt: the server refuses, nothing changes
    alien = Cipher(parse_key(generate_key())).encrypt("x", place_of("password:acme/smtp1"))
    with sqlite3.connect(inst / "mail_proxy.db") as conn:
        conn.execute("UPDATE accounts SET password_enc = ? WHERE tenant_id = 'acme'", (alien,))
    refused = await asyncio.to_thread(cli, "main", "rotate-key")
    assert refused.code == 1 and "key_mismatch" in refused.err and "HTTP 409" in refused.err
    assert (inst / "encryption.key").read_text() == key
    assert not (inst / "encryption.key.new").exists()
    assert not (inst / "encryption.key.old").exists()
    with sqlite3.connect(inst / "mail_proxy.db") as conn:
        conn.execute("DELETE FROM accounts WHERE tenant_id = 'acme'")

    pending = generate_key()  # as left by a rotate-key whose answer was lost
    (inst / "encryption.key.new").write_text(pending + "\n")
    result = await run(cli, "main", "rotate-key")
    assert "resuming the unfinished rotation" in result.err
    assert (inst / "encryption.key").read_text().strip() == pending
    assert not (inst / "encryption.key.new").exists()

    await run(cli, "stop", "main")
    down = await asyncio.to_thread(cli, "main", "rotate-key")
    assert down.code == 1 and "is not running" in down.err
    assert (inst / "encryption.key").read_text().strip() == pending
    await run(cli, "start", "main")  # the database matches the key file
    await deliver(cli, smtp, tmp_path, "resumed", ("default",))
