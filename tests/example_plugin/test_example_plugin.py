"""The worked example plugin (tests/plugins/gmp_example), installed by entry point, through the
real service in its own process, a real SMTP server, a real report receiver and the real CLI:
every extension hook does what docs/plugins.md says. Skipped where the example plugin is not
installed (the second phase of scripts/test runs the core and CE suites without it)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.reports import ReportClient, wait_until
from mail_proxy.core.testing.service import ServiceProcess
from mail_proxy.core.testing.smtp import SmtpTestServer

pytest.importorskip("gmp_example", reason="the example plugin is not installed here")

BIN = Path(sys.executable).parent / "mail-proxy"
TENANT_TOKEN = "example-tenant-token-0123456789"
#: The other optional plugins a developer's venv holds, left out to watch this one alone.
OTHERS = "multitenancy,bounce,pec,large_files,gmp_test,vault"


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpTestServer]:
    server = await SmtpTestServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def reports() -> AsyncIterator[ReportClient]:
    async with ReportClient() as client:
        yield client


async def start(tmp_path: Path, reports: ReportClient, **env: str) -> ServiceProcess:
    key_file = tmp_path / "key"  # the same key across restarts of one test's service
    if not key_file.exists():
        key_file.write_text(generate_key())
    base = {
        "GMP_DATABASE_URL": f"sqlite:///{tmp_path / 'example.db'}",
        "GMP_API_TOKEN": "example-admin-token-0123456789",
        "MAIL_PROXY_ENCRYPTION_KEY": key_file.read_text(),
        "GMP_CLIENT_SYNC_URL": reports.url,
        "GMP_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "GMP_EXAMPLE_VERP_DOMAIN": "bounces.example.net",
        "GMP_EXAMPLE_TENANT_TOKEN": f"default:{TENANT_TOKEN}",
        "GMP_LOG_LEVEL": "WARNING",
        "GMP_DISABLED_PLUGINS": OTHERS,
        **env,
    }
    return await ServiceProcess(base, tmp_path / "svc.log").start()


async def call(
    svc: ServiceProcess, method: str, path: str, token: str | None = None, **kw: Any
) -> tuple[int, Any]:
    headers = {"X-API-Token": token or svc.token}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, svc.url + path, headers=headers, **kw) as resp:
            return resp.status, await resp.json()


def message(mid: str, subject: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {
        "id": mid,
        "from": "shop@example.com",
        "to": ["ann@example.org"],
        "subject": subject,
        **extra,
    }


async def test_every_extension_hook_through_the_running_service(
    tmp_path: Path, smtp: SmtpTestServer, reports: ReportClient
) -> None:
    svc = await start(tmp_path, reports)
    try:
        # account field (register_account_fields): validated by the plugin's model, stored, shown
        status, body = await call(
            svc,
            "POST",
            "/account",
            json={
                "id": "main",
                "host": "127.0.0.1",
                "port": smtp.port,
                "default": True,
                "example_region": "eu-south",
            },
        )
        assert status == 200 and body["account"]["example_region"] == "eu-south", body
        status, body = await call(
            svc, "POST", "/account", json={"id": "bad", "host": "h.example", "example_region": "X"}
        )
        assert status == 400 and "example_region" in body["error"], body

        # tenant setting (register_tenant_settings), with a sealed secret, set by the tenant
        status, body = await call(
            svc,
            "PUT",
            "/tenant-settings/example_labels",
            TENANT_TOKEN,  # authenticate: the plugin's own tenant token
            json={"label": "gold", "api_secret": "s3cret-value"},
        )
        assert status == 200, body
        assert body["example_labels"] == {"label": "gold", "api_secret_set": True}
        status, body = await call(svc, "GET", "/tenant-settings", TENANT_TOKEN)
        assert body["settings"]["example_labels"]["label"] == "gold"
        assert "s3cret-value" not in str(body)

        # message step at enqueue: refuse, warn through its own field, label
        status, body = await call(
            svc,
            "POST",
            "/commands/add-messages",
            json={
                "messages": [
                    message("m1", example_priority_hint=3),
                    message("m2", subject="[blocked] offer"),
                ]
            },
        )
        assert status == 200, body
        assert body["queued"] == 1
        assert body["rejected"] == [
            {"id": "m2", "reason": "subject is blocked by the example plugin", "index": 1}
        ]
        assert body["warnings"] == [
            {"id": "m1", "warning": "example_priority_hint 3 noted, not used"}
        ]

        # message step before sending: VERP envelope sender; the label header is on the message
        await wait_until(lambda: _async(len(smtp.messages) == 1), what="delivery")
        received = smtp.messages[0]
        assert received.mail_from == "bounce+m1@bounces.example.net"
        assert received.message["X-Example-Label"] == "gold"
        assert received.message["From"] == "shop@example.com"

        # route + own table + event type: a note is stored, reported and shown on the message
        status, body = await call(svc, "POST", "/example/notes/m1", json={"note": "called ann"})
        assert status == 200, body
        status, body = await call(svc, "GET", "/example/notes/m1")
        assert [n["note"] for n in body["notes"]] == ["called ann"]
        status, body = await call(svc, "GET", "/messages/m1")
        assert body["message"]["example_notes"] == ["called ann"]
        await reports.wait_for(lambda: any("note" in i for i in reports.accepted_items()))
        [noted] = [i for i in reports.accepted_items() if "note" in i]
        assert noted == {"id": "m1", "noted_ts": noted["noted_ts"], "note": "called ann"}

        # on_event, tenant_changed and the service
        status, body = await call(svc, "GET", "/example/seen")
        assert body["events"]["sent"] == 1 and body["events"]["example_noted"] == 1
        assert "default" in body["tenants_changed"] and body["heartbeat_ticks"] > 0
    finally:
        svc.stop()
    # the plugin's table lives in the service's database, under its own migration branch
    with sqlite3.connect(tmp_path / "example.db") as conn:
        assert conn.execute("SELECT note FROM example_notes").fetchall() == [("called ann",)]
        assert conn.execute("SELECT version_num FROM alembic_version_example").fetchall() == [
            ("example_0001",)
        ]


async def test_the_service_without_the_plugin_keeps_its_tables_and_refuses_its_fields(
    tmp_path: Path, smtp: SmtpTestServer, reports: ReportClient
) -> None:
    svc = await start(tmp_path, reports)
    await call(svc, "POST", "/example/notes/none", json={"note": "x"})
    svc.stop()
    svc = await start(tmp_path, reports, GMP_DISABLED_PLUGINS=f"{OTHERS},example")
    try:
        status, _ = await call(svc, "GET", "/example/seen")
        assert status == 404
        status, body = await call(
            svc, "POST", "/account", json={"id": "a", "host": "h.example", "example_region": "eu-x"}
        )
        assert status == 400 and "example_region" in body["error"]
        status, body = await call(
            svc, "PUT", "/tenant-settings/example_labels", json={"label": "x"}
        )
        assert status == 400 and body["code"] == "unknown_setting"
        account = {"id": "a", "host": "127.0.0.1", "port": smtp.port, "default": True}
        assert (await call(svc, "POST", "/account", json=account))[0] == 200
        status, body = await call(
            svc,
            "POST",
            "/commands/add-messages",
            json={"messages": [message("m9", subject="[blocked] ok now")]},
        )
        assert body["queued"] == 1, body  # its step is gone with it
    finally:
        svc.stop()
    with sqlite3.connect(tmp_path / "example.db") as conn:  # uninstalling leaves its tables
        assert conn.execute("SELECT count(*) FROM example_notes").fetchone() == (0,)


def test_the_plugin_command_runs_from_the_cli() -> None:
    out = subprocess.run(
        [str(BIN), "example-verp", "order 7", "b.example"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "bounce+order=7@b.example"
    listed = subprocess.run(
        [str(BIN), "plugins", "--json"], capture_output=True, text=True, check=True
    )
    assert '"example"' in listed.stdout and "example_labels" in listed.stdout


async def _async(value: bool) -> bool:
    return value
