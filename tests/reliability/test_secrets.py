"""S13: planted sentinel secrets never come out.

Every service the battery starts carries planted secrets (harness.Fleet: admin token,
encryption key, report signing secret, report bearer token; each log is searched when the
test ends). This scenario plants the others too: an SMTP password (used over STARTTLS with
the sink's own CA), a wrong SMTP password (an authentication failure, reported), and, when
the multitenancy plugin is installed, a tenant's report password and API key. Then it works
the service (deliveries, a failure, reports, every read route, the command log export) and
searches the logs (DEBUG), every API answer, every report body and a dump of the database
(its text dump and the raw bytes of the file and its WAL) for any of them.

The only places a secret may appear: the answer that created a tenant API key (shown once),
and the request headers that carry credentials to their own endpoint.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from reliability.harness import Fleet, Sink, find_secrets, message, planted, wait_final

from mail_proxy.core.testing.reports import ReportClient

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

try:
    import mail_proxy.ee.multitenancy  # noqa: F401

    MULTITENANCY = True
except ImportError:  # core + ce only
    MULTITENANCY = False


class Recorder:
    """Calls the service and keeps every answer's text."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.answers: list[str] = []

    async def __call__(
        self, method: str, path: str, body: Any = None, keep: bool = True, **params: str
    ) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.request(
                method,
                self.base + path,
                json=body,
                params=params or None,
                headers={"X-API-Token": self.token},
            ) as resp:
                text = await resp.text()
        if keep:
            self.answers.append(f"{method} {path} {resp.status}\n{text}")
        assert resp.status < 500, (path, resp.status, text)
        return resp.status, text


def database_dump(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        text = "\n".join(conn.iterdump())
    finally:
        conn.close()
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    return text + raw.decode("latin-1")


async def test_s13_planted_secrets_stay_secret(tmp_path: Path) -> None:
    smtp_password = planted("smtppass")
    wrong_password = planted("wrongpass")
    tenant_password = planted("tenantpass")
    db = tmp_path / "s13.db"
    async with Sink(starttls=True, auth=("mailer", smtp_password)) as sink, ReportClient() as rc:
        async with Fleet(
            tmp_path, f"sqlite:///{db}", GMP_LOG_LEVEL="DEBUG", GMP_CLIENT_SYNC_URL=rc.url
        ) as fleet:
            svc = await fleet.start()
            call = Recorder(svc.url, fleet.token)
            tls = {"tls_ca_file": sink.ca_file}
            for account_id, password in (("good", smtp_password), ("bad", wrong_password)):
                status, _ = await call(
                    "POST",
                    "/account",
                    {
                        "id": account_id,
                        "host": "127.0.0.1",
                        "port": sink.port,
                        "user": "mailer",
                        "password": password,
                        "starttls": True,
                        "options": tls,
                        "default": account_id == "good",
                    },
                )
                assert status == 200
            secrets = [*fleet.secrets, smtp_password, wrong_password, tenant_password]
            shown_once: list[str] = []
            if MULTITENANCY:
                status, text = await call(
                    "POST",
                    "/tenant",
                    {
                        "id": "acme",
                        "client_base_url": rc.base_url,
                        "client_auth": {
                            "method": "basic",
                            "user": "acme",
                            "password": tenant_password,
                        },
                    },
                    keep=False,  # the answer that shows the new key, once
                )
                assert status in (200, 201), text
                created = json.loads(text)
                secrets += [created["api_key"], created.get("sync_secret") or ""]
                shown_once.append(text)
            entries = [message(f"s{i}") for i in range(4)] + [message("fails", account_id="bad")]
            status, _ = await call("POST", "/commands/add-messages", {"messages": entries})
            assert status == 200
            messages = await wait_final(svc, 5, timeout=30)
            by_id = {m["id"]: m for m in messages}
            assert by_id["fails"]["status"] == "error" and by_id["s0"]["status"] == "sent"
            assert all(m.tls and m.authenticated_as == "mailer" for m in sink.messages)
            await rc.wait_for(lambda: len(rc.accepted_items()) >= 5, 20)
            for path in (
                "/status",
                "/accounts",
                "/messages",
                "/messages/s0",
                "/messages/fails",
                "/messages/fails/events",
                "/instance",
                "/command-log",
                "/command-log/export",
                "/openapi.json",
                "/metrics",
                "/tenants",
                "/tenant/acme",
                "/tenants/sync-status",
            ):
                await call("GET", path)
            await call("POST", "/commands/run-now", {})
        dump = database_dump(db)
    secrets = [s for s in secrets if s]
    places = {
        "answers": "\n".join(call.answers),
        "report bodies": "\n".join(r.body.decode() for r in rc.requests),
        "report signatures": "\n".join(r.headers.get("webhook-signature", "") for r in rc.requests),
        "logs": fleet.logs(),
        "database": dump,
    }
    leaks = {where: find_secrets(text, secrets) for where, text in places.items()}
    assert not any(leaks.values()), leaks
    # the checks looked at real material
    assert "fails" in places["answers"] and "DEBUG" in places["logs"]
    assert (rc.requests and "password_enc" in dump) or "accounts" in dump
