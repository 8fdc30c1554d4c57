"""L5: the database goes away under load and comes back.

A private PostgreSQL server is started by the test (``initdb`` + ``pg_ctl`` from Debian's
``postgresql`` package, as the non-root user ``postgres`` when the test runs as root, on a
loopback port). Clients post while the service delivers; the server is stopped with
``pg_ctl stop -m immediate`` (a crash: no checkpoint, connections cut), kept down for a few
seconds, started again, then restarted once more with ``pg_ctl restart -m immediate``.

While it is down the API answers 503 with a JSON body (never a traceback); the service
recovers by itself; every message answered 2xx is delivered once (lost = 0).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from reliability.harness import (
    Accounting,
    Fleet,
    Posters,
    Sink,
    add_account,
    record,
    uncertain_ids,
    wait_final,
)

from mail_proxy.core.testing.service import free_port

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in a temporary directory."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="gmp-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}{log[-2000:]}")

    def pg_ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self.run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, *args
        )

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.pg_ctl("start")

    def close(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    bindir = postgres_bin()
    if bindir is None or not shutil.which("runuser"):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Debian's postgresql package (initdb, pg_ctl) is required under CI")
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    server = PrivatePostgres(bindir)
    await asyncio.to_thread(server.init)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


async def test_l5_postgresql_crash_and_restart_under_load(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    async with Sink() as sink:
        sink.data_delay = 0.02
        async with Fleet(tmp_path, private_pg.url, GMP_CLAIM_LEASE_SECONDS="3") as fleet:
            svc = await fleet.start()
            await add_account(svc, sink)
            posters = Posters([svc], clients=10, seconds=14, batch=2, pause=0.1, prefix="d")
            posting = asyncio.create_task(posters.run())
            await asyncio.sleep(3)
            await asyncio.to_thread(private_pg.pg_ctl, "stop", "-m", "immediate")
            await asyncio.sleep(3)  # down: the clients get 503s
            await asyncio.to_thread(private_pg.pg_ctl, "start")
            await asyncio.sleep(3)
            await asyncio.to_thread(private_pg.pg_ctl, "restart", "-m", "immediate")
            await posting
            await wait_final(svc, len(posters.accepted), timeout=90)
            account = Accounting(posters.accepted, sink.copies())
            five = {s: n for s, n in posters.statuses.items() if s >= 500}
            record(
                "L5 postgresql restart",
                **account.figures(),
                requests=sum(posters.statuses.values()),
                **{"5xx": sum(five.values()), "503": five.get(503, 0)},
                flagged=len(await uncertain_ids(private_pg.url)),
            )
            assert five.get(503), "the outage was never seen by a client"
            assert set(five) == {503}, five
            for body in posters.bodies_5xx:
                assert isinstance(body, dict) and body["ok"] is False, body
                assert body["code"] == "database_unavailable"
                assert "Traceback" not in str(body)
            assert not account.lost and not account.unexpected and not account.duplicated
            # recovered: a new message after the outage goes through at once
            data = await svc.call(
                "POST",
                "/commands/add-messages",
                json={
                    "messages": [
                        {
                            "id": "after",
                            "from": "a@example.com",
                            "to": ["b@example.com"],
                            "subject": "s",
                        }
                    ]
                },
            )
            assert data["queued"] == 1
            await sink.wait_until(lambda: "after" in sink.copies(), timeout=20)
            assert "Traceback" not in "".join(str(b) for b in posters.bodies_5xx)
