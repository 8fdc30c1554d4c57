"""What the reliability battery shares: the real service in subprocesses with planted
sentinel secrets, an SMTP sink that keeps what it was given, clients posting over HTTP, and
the accounting, done from the sink's own record.

Every service started through :class:`Fleet` gets sentinel values for each secret it knows
(admin token, encryption key, report signing secret, report bearer token); when the fleet is
closed its logs are searched for them (S13 does the same for answers, reports and a database
dump). Figures a test measures can be collected with :func:`record` (JSON lines in the file
named by ``GMP_RELIABILITY_RESULTS``), which is how docs/reliability.md's table is filled.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.service import ServiceProcess
from mail_proxy.core.testing.smtp import SmtpTestServer

#: Part of every planted secret: found anywhere it should not be, it names the leak.
SENTINEL = "PLANTED7SENTINEL"


def planted(kind: str) -> str:
    """A fresh secret value carrying :data:`SENTINEL`."""
    return f"{kind}-{SENTINEL}-{secrets.token_hex(8)}"


class Sink(SmtpTestServer):
    """The SMTP server the battery delivers to.

    With ``data_delay`` set, it takes a message (records it) as soon as the content is in and
    only then waits before answering ``250``, like a server that has queued it: a client that
    dies in that window has delivered the message without knowing. That is the window in
    which at-least-once delivery may duplicate, so the battery makes it wide.
    """

    def _factory(self) -> Any:
        proto = super()._factory()
        record_and_answer = proto._handle_hooks["DATA"]

        async def data(server: Any, session: Any, envelope: Any) -> str:
            delay = self.data_delay
            if not delay:
                return await record_and_answer(server, session, envelope)  # type: ignore[no-any-return]
            self.data_delay = 0.0  # (no await inside: the other sessions never see 0)
            try:
                reply = await record_and_answer(server, session, envelope)
            finally:
                self.data_delay = delay
            await asyncio.sleep(delay)
            return reply  # type: ignore[no-any-return]

        proto._handle_hooks["DATA"] = data
        return proto

    def copies(self) -> Counter[str]:
        """How many times the sink received each message (by the proxy's X-Genro-Mail-ID)."""
        return Counter(str(m.message["X-Genro-Mail-ID"]) for m in self.messages)


@dataclass
class Accounting:
    """Accepted messages against what the sink received."""

    accepted: set[str]
    copies: Counter[str]

    @property
    def lost(self) -> set[str]:
        return self.accepted - set(self.copies)

    @property
    def duplicated(self) -> dict[str, int]:
        return {i: n - 1 for i, n in self.copies.items() if n > 1}

    @property
    def unexpected(self) -> set[str]:
        return set(self.copies) - self.accepted

    def figures(self) -> dict[str, int]:
        return {
            "accepted": len(self.accepted),
            "lost": len(self.lost),
            "duplicated": sum(self.duplicated.values()),
        }


def record(item: str, **figures: Any) -> None:
    """Print a battery item's figures; append them to ``$GMP_RELIABILITY_RESULTS``."""
    line = json.dumps({"item": item, "ts": round(time.time()), **figures}, sort_keys=True)
    print(line)
    target = os.environ.get("GMP_RELIABILITY_RESULTS")
    if target:
        with open(target, "a") as f:
            f.write(line + "\n")


def message(msg_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": msg_id,
        "from": "Battery <battery@example.com>",
        "to": [f"{msg_id}@example.net"],
        "subject": f"battery {msg_id}",
        "body": "reliability battery " * 20,
        **fields,
    }


class Fleet:
    """The service processes of one test, on one database, with planted secrets.

    ``start()`` launches ``mail-proxy serve`` (a new process each time, the same database);
    ``kill(svc)`` is SIGKILL; ``close()`` stops what still runs and checks every log for the
    planted secrets.
    """

    def __init__(self, tmp_path: Path, database_url: str, **env: str) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.token = planted("admin")
        self.key = generate_key()
        self.sync_secret = planted("syncsecret")
        self.sync_token = planted("synctoken")
        self.env: dict[str, str] = {
            "GMP_DATABASE_URL": database_url,
            "GMP_API_TOKEN": self.token,
            "MAIL_PROXY_ENCRYPTION_KEY": self.key,
            "GMP_CLIENT_SYNC_SECRET": self.sync_secret,
            "GMP_CLIENT_SYNC_TOKEN": self.sync_token,
            "GMP_LOG_LEVEL": "INFO",
            "GMP_SEND_LOOP_INTERVAL": "0.05",
            "GMP_SYNC_INTERVAL": "3600",
            **env,
        }
        self.services: list[ServiceProcess] = []
        self._n = 0

    @property
    def secrets(self) -> list[str]:
        """Values that must never appear in a log, an answer, a report body or the database."""
        return [self.token, self.key, self.sync_secret, self.sync_token]

    async def start(self, **env: str) -> ServiceProcess:
        self._n += 1
        svc = ServiceProcess({**self.env, **env}, self.tmp_path / f"service-{self._n}.log")
        self.services.append(svc)
        return await svc.start(timeout=30)

    def kill(self, svc: ServiceProcess) -> None:
        svc.kill()

    def stop_signal(self, svc: ServiceProcess, sig: int) -> None:
        assert svc.proc is not None
        os.kill(svc.proc.pid, sig)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("service-*.log"))
        )

    def close(self) -> None:
        for svc in self.services:
            if svc.proc is not None and svc.proc.poll() is None:
                os.kill(svc.proc.pid, signal.SIGCONT)  # a stopped process cannot exit
            svc.stop()
        leaks = find_secrets(self.logs(), self.secrets)
        assert not leaks, f"planted secrets in the service logs: {leaks}"

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def find_secrets(text: str, values: Iterable[str]) -> list[str]:
    """The planted values (and the bare sentinel) found in ``text``."""
    found = [v[:24] + "..." for v in values if v and v in text]
    if SENTINEL in text and not found:
        found.append(SENTINEL)
    return found


async def post(
    session: aiohttp.ClientSession,
    svc: ServiceProcess,
    path: str,
    body: Any,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One API call: ``(status, parsed JSON or the raw text)``; ``(0, error)`` when the
    connection failed (the service was killed, ...)."""
    try:
        async with session.post(
            svc.url + path,
            json=body,
            headers=svc.headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
        return 0, repr(exc)


async def get_json(svc: ServiceProcess, path: str, **params: str) -> Any:
    return await svc.call("GET", path, params=params or None)


async def list_messages(svc: ServiceProcess, **params: str) -> list[dict[str, Any]]:
    """Every message (all pages) of ``GET /messages``."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": "1000", **params}
        if cursor:
            query["cursor"] = cursor
        page = await svc.call("GET", "/messages", params=query)
        out.extend(page["messages"])
        cursor = page.get("next_cursor")
        if not cursor:
            return out


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f} s")
        await asyncio.sleep(every)


async def wait_final(svc: ServiceProcess, count: int, timeout: float) -> list[dict[str, Any]]:
    """Wait until ``count`` messages are final (sent or error); returns every message."""
    latest: list[dict[str, Any]] = []

    async def done() -> bool:
        nonlocal latest
        try:
            latest = await list_messages(svc)
        except (aiohttp.ClientError, AssertionError):
            return False
        return sum(m["status"] in ("sent", "error") for m in latest) >= count

    try:
        await wait_until(done, timeout, f"{count} messages final", every=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {Counter(m['status'] for m in latest)}") from None
    return latest


async def add_account(svc: ServiceProcess, sink: SmtpTestServer, **fields: Any) -> None:
    body = {"id": "battery", "host": "127.0.0.1", "port": sink.port, "default": True, **fields}
    await svc.call("POST", "/account", json=body)


# -- the database, read directly ---------------------------------------------------------------
async def db_rows(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read straight from the service's database (SQLite or PostgreSQL)."""
    if database_url.startswith("sqlite:///"):
        path = database_url[len("sqlite:///") :]

        def read() -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(path, timeout=30)
            try:
                return [tuple(r) for r in conn.execute(sql)]
            finally:
                conn.close()

        return await asyncio.to_thread(read)
    import asyncpg

    base, _, query = database_url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&") if p).get("schema")
    settings = {"search_path": schema} if schema else None
    conn = await asyncpg.connect(base, server_settings=settings)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def uncertain_ids(database_url: str) -> set[str]:
    return {r[0] for r in await db_rows(database_url, "SELECT id FROM messages WHERE uncertain")}


async def in_flight(database_url: str, claimed_by: str | None = None) -> set[str]:
    where = "status = 'sending'"
    if claimed_by is not None:
        where += f" AND claimed_by = '{claimed_by}'"
    return {r[0] for r in await db_rows(database_url, f"SELECT id FROM messages WHERE {where}")}


@dataclass
class Posters:
    """``clients`` concurrent clients posting small batches of fresh ids for ``seconds``.

    Ids answered 2xx with ``queued`` are in ``accepted``; every status seen is counted in
    ``statuses`` (0 = no answer). A batch whose answer was lost is posted again with the same
    ids (``reposted``) until it gets an answer, like a careful client.
    """

    svcs: list[ServiceProcess]
    clients: int
    seconds: float
    batch: int = 2
    pause: float = 0.2
    prefix: str = "p"
    accepted: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    reposted: set[str] = field(default_factory=set)
    bodies_5xx: list[Any] = field(default_factory=list)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._client(session, c) for c in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession, c: int) -> None:
        deadline = time.monotonic() + self.seconds
        n = 0
        while time.monotonic() < deadline:
            ids = [f"{self.prefix}{c}-{n + k}" for k in range(self.batch)]
            n += self.batch
            await self._post_until_answered(session, c, ids, deadline + 30)
            await asyncio.sleep(self.pause)

    async def _post_until_answered(
        self, session: aiohttp.ClientSession, c: int, ids: list[str], give_up: float
    ) -> None:
        body = {"messages": [message(i) for i in ids]}
        tries = 0
        while True:
            svc = self.svcs[(c + tries) % len(self.svcs)]
            status, data = await post(session, svc, "/commands/add-messages", body)
            self.statuses[status] += 1
            if status >= 500:
                self.bodies_5xx.append(data)
            if status == 200:
                rejected = {r["id"]: r["reason"] for r in data.get("rejected", [])}
                # a re-post of ids already taken says so: they were accepted the first time
                self.accepted.update(
                    i for i in ids if i not in rejected or rejected[i] in ("already sent",)
                )
                if any(r == "being sent" for r in rejected.values()):
                    self.accepted.update(i for i, r in rejected.items() if r == "being sent")
                return
            if status != 0 and status < 500:
                raise AssertionError(f"add-messages answered {status}: {data}")
            tries += 1
            self.reposted.update(ids)
            if time.monotonic() > give_up:
                return
            await asyncio.sleep(0.2)
