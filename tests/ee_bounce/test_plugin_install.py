"""Without the plugin (``GMP_DISABLED_PLUGINS=bounce``, as if not installed) none of its routes,
commands or tables exist and mail goes out as before; installed later on the same database,
it creates its tables on the next start. Two instances on one PostgreSQL database read a
shared mailbox without processing a bounce twice."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from ee_bounce.bounce_stack import TOKEN, BounceStack, postfix_dsn

from mail_proxy.core.testing.service import ServiceProcess
from support.cli_runner import Cli

ROUTES = [
    ("GET", "/instance/bounce"),
    ("PUT", "/instance/bounce"),
    ("POST", "/instance/reload-bounce"),
    ("POST", "/instance/bounce/test"),
    ("GET", "/suppressions"),
    ("POST", "/suppressions"),
    ("DELETE", "/suppressions/a@example.org"),
]


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_without_the_plugin_nothing_of_it_exists(stack: BounceStack, tmp_path: Path) -> None:
    await stack.start(GMP_DISABLED_PLUGINS="bounce")
    for method, path in ROUTES:
        status, data = await stack.api(method, path, json={} if method != "GET" else None)
        assert (status, data.get("code")) == (404, "not_found"), (method, path, data)
    status = await stack.ok("GET", "/status")
    assert "bounce" not in status["plugins"]
    status_code, data = await stack.api("PUT", "/tenant-settings/bounce", json={"enabled": False})
    assert status_code == 400 and data["code"] == "plugin_not_installed"
    assert "genro-mail-proxy[bounce]" in data["error"]
    await stack.add_account()
    received = await stack.send("plain-1", to="x@example.org")
    assert received.mail_from == "shop@example.com"  # no VERP
    message = (await stack.ok("GET", "/messages/plain-1"))["message"]
    assert "bounce_type" not in message
    accepted = await stack.ok(
        "POST",
        "/commands/add-messages",
        json={"messages": [{"id": "p2", "from": "a@example.com", "to": ["b@example.org"],
                            "subject": "s", "ignore_suppression": True}]},
    )  # fmt: skip
    assert accepted["queued"] == 0  # a field of the plugin's: unknown without it
    db = tmp_path / "gmp.db"
    assert not {t for t in _tables(db) if "bounce" in t}
    metrics = await stack.metrics()
    assert "gmp_bounce" not in metrics

    cli = Cli(tmp_path / "home", GMP_DISABLED_PLUGINS="bounce")
    plugins = cli.ok("plugins").out
    assert "bounce" not in plugins
    assert cli("bounce", "parse", "x.eml").code != 0
    assert cli("main", "suppressions", "list").code != 0

    # installed later: its tables come with the next start
    stack.stop()
    stack.env.pop("GMP_DISABLED_PLUGINS")
    await stack.start()
    assert {
        "bounce_mailbox_state",
        "bounce_seen",
        "bounce_suppressions",
        "bounce_secrets",
        "alembic_version_bounce",
    } <= _tables(db)
    assert (await stack.ok("GET", "/suppressions"))["suppressions"] == []


async def test_two_instances_on_postgresql_process_each_bounce_once(
    stack: BounceStack, pg_url: str
) -> None:
    await stack.start(GMP_DATABASE_URL=pg_url)
    await stack.configure()
    await stack.add_account()
    second = ServiceProcess(stack.env, stack.tmp / "svc2.log")
    stack.extra.append(await second.start())
    sent = [await stack.send(f"pg-{i}", to=f"gone{i}@example.org") for i in range(6)]
    for received in sent:
        stack.append(postfix_dsn(received))
    await stack.wait_seen(6)
    for i in range(6):
        await stack.wait_bounces(f"pg-{i}")
    await asyncio.sleep(2)
    for i in range(6):
        events = (await stack.ok("GET", f"/messages/pg-{i}/events", svc=second))["events"]
        assert len([e for e in events if e["event_type"] == "bounce"]) == 1
    # one instance holds the mailbox, the other waits
    states = [
        [m["state"] for m in (await stack.ok("GET", "/instance/bounce", svc=svc))["mailboxes"]]
        for svc in (stack.svc, second)
    ]
    assert sorted(s[0] for s in states) == ["polling", "standby"], states
    assert TOKEN not in (stack.tmp / "svc2.log").read_text()
