"""``core.imap``: the IMAP poller against a real Dovecot, its state in real databases.

No IMAP is mocked: every test talks to the Dovecot the ``dovecot`` fixture runs (one per
pytest worker), each with users of its own. The state store is SQLite (a temporary file) and,
where the lease matters, PostgreSQL too (a private schema, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mail_proxy.core.imap.poller import ImapPoller, MailboxSettings
from mail_proxy.core.imap.state import (
    MailboxState,
    MemoryMailboxStateStore,
    SqlMailboxStateStore,
    mailbox_state_table,
)
from support.dovecot import Dovecot, dovecot  # noqa: F401 - the fixture

# -- helpers ---------------------------------------------------------------------------------


def message(n: int, body_size: int = 0) -> bytes:
    body = b"x" * body_size if body_size else f"message {n}".encode()
    return (
        (
            f"From: mailer-daemon@example.com\r\nTo: bounces@example.com\r\n"
            f"Subject: test {n}\r\nMessage-ID: <{n}.{uuid.uuid4().hex}@test>\r\n\r\n"
        ).encode()
        + body
        + b"\r\n"
    )


class Recorder:
    """A handler recording what it is given; ``fail_on`` UIDs raise once each."""

    def __init__(self, fail_on: tuple[int, ...] = ()) -> None:
        self.calls: list[tuple[int, bytes]] = []
        self.fail_on = set(fail_on)

    async def __call__(self, uid: int, raw: bytes) -> None:
        if uid in self.fail_on:
            self.fail_on.discard(uid)
            raise RuntimeError(f"transient trouble with {uid}")
        self.calls.append((uid, raw))

    @property
    def uids(self) -> list[int]:
        return [uid for uid, _ in self.calls]


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def engine_for(url: str) -> tuple[AsyncEngine, str | None]:
    """An async engine for the conftest's URLs (``sqlite:///f``, PostgreSQL ``?schema=``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_async_engine(parsed.set(drivername="sqlite+aiosqlite")), None
    schema = parsed.query.get("schema")
    schema = schema[0] if isinstance(schema, tuple) else schema
    parsed = parsed.difference_update_query(["schema"]).set(drivername="postgresql+asyncpg")
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    return create_async_engine(parsed, connect_args=connect_args), schema


async def open_store(url: str, clock: Callable[[], float] = time.time) -> SqlMailboxStateStore:
    engine, schema = engine_for(url)
    metadata = sa.MetaData()
    table = mailbox_state_table(metadata, "imap_mailbox_state")
    async with engine.begin() as conn:
        if schema:
            await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(metadata.create_all)
    return SqlMailboxStateStore(engine, table, clock=clock)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlMailboxStateStore]:
    store = await open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    await store.engine.dispose()


@pytest.fixture
async def any_store(db_url: str) -> AsyncIterator[SqlMailboxStateStore]:
    """The SQL store once on SQLite, once on PostgreSQL (conftest's ``db_url``)."""
    store = await open_store(db_url)
    yield store
    await store.engine.dispose()


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Callable[..., MailboxSettings]:  # noqa: F811
    """Settings for a fresh Dovecot user (plain IMAP on loopback); overrides as keywords."""
    user, password = dovecot.new_user()

    def make(**overrides: Any) -> MailboxSettings:
        base: dict[str, Any] = {
            "host": dovecot.host,
            "port": dovecot.port,
            "user": user,
            "password": password,
            "use_tls": False,
            "poll_interval": 60.0,
            "timeout": 10.0,
        }
        base.update(overrides)
        return MailboxSettings(**base)

    return make


@pytest.fixture
async def pollers() -> AsyncIterator[list[ImapPoller]]:
    """Pollers to close at the end of the test (logout, lease released)."""
    made: list[ImapPoller] = []
    yield made
    for poller in made:
        poller.stop()
        await poller.close()


def poller_for(
    made: list[ImapPoller], settings: MailboxSettings, store: Any, handler: Any, **kw: Any
) -> ImapPoller:
    poller = ImapPoller(settings, store, handler, kw.pop("key", "test:mailbox"), **kw)
    made.append(poller)
    return poller


# -- reading ---------------------------------------------------------------------------------


async def test_reads_each_message_once_across_restarts(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
) -> None:
    settings = mailbox()
    sent = [message(i) for i in range(3)]
    for raw in sent:
        dovecot.append(settings.user, raw)

    handler = Recorder()
    poller = poller_for(pollers, settings, sqlite_store, handler)
    assert await poller.poll_once() == 3
    assert handler.uids == [1, 2, 3]
    assert [raw for _, raw in handler.calls] == sent  # the bytes as appended
    assert dovecot.count(settings.user, unseen_only=True) == 0
    assert all("\\Seen" in dovecot.flags(settings.user, uid) for uid in (1, 2, 3))
    assert poller.status() | {"last_poll_ts": None} == {
        "key": "test:mailbox",
        "connected": True,
        "has_lease": True,
        "last_poll_ts": None,
        "uidvalidity": dovecot.uidvalidity(settings.user),
        "last_uid": 3,
        "last_error": None,
        "processed": 3,
        "skipped_too_large": 0,
        "connections": 1,
        "failures": 0,
    }
    assert poller.last_poll_ts is not None and poller.last_poll_ts <= time.time()
    assert await poller.poll_once() == 0  # nothing new
    await poller.close()

    # A new poller on the same store (a restart): nothing again, then only what is new.
    handler2 = Recorder()
    restarted = poller_for(pollers, settings, sqlite_store, handler2)
    assert await restarted.poll_once() == 0
    dovecot.append(settings.user, message(3))
    dovecot.append(settings.user, message(4))
    assert await restarted.poll_once() == 2
    assert handler2.uids == [4, 5]
    assert handler.uids == [1, 2, 3]
    assert await sqlite_store.load("test:mailbox") == MailboxState(
        uidvalidity=dovecot.uidvalidity(settings.user), last_uid=5
    )


@pytest.mark.parametrize("folder", ["INBOX", "Receipts"])
async def test_uidvalidity_change_reads_the_folder_again(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
    folder: str,
) -> None:
    # The server renumbered the folder: the stored last UID means nothing any more, so the
    # poller starts again from UID 1 (what it had handled may come again: the handler side is
    # idempotent by contract).
    settings = mailbox(folder=folder)
    for i in range(2):
        dovecot.append(settings.user, message(i), folder=folder)
    handler = Recorder()
    poller = poller_for(pollers, settings, sqlite_store, handler)
    assert await poller.poll_once() == 2
    old = poller.uidvalidity
    await poller.close()  # nobody may have the folder open while it is recreated

    new = dovecot.recreate_folder(settings.user, folder)
    dovecot.append(settings.user, message(9), folder=folder)  # UID 1 again, below last_uid 2
    assert new != old
    assert await poller.poll_once() == 1
    assert handler.uids == [1, 2, 1]
    assert poller.uidvalidity == new
    assert await sqlite_store.load("test:mailbox") == MailboxState(uidvalidity=new, last_uid=1)


async def test_oversize_message_is_skipped_counted_and_left_unread(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
) -> None:
    settings = mailbox(max_message_bytes=2000)
    dovecot.append(settings.user, message(1))
    dovecot.append(settings.user, message(2, body_size=5000))
    dovecot.append(settings.user, message(3))
    handler = Recorder()
    poller = poller_for(pollers, settings, sqlite_store, handler)
    assert await poller.poll_once() == 2
    assert handler.uids == [1, 3]
    assert poller.skipped_too_large == 1 and poller.processed == 2
    assert poller.last_uid == 3  # passed over, not retried
    assert "\\Seen" not in dovecot.flags(settings.user, 2)  # left for a human
    assert await poller.poll_once() == 0
    assert poller.skipped_too_large == 1


async def test_batches_and_a_failing_handler(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
) -> None:
    # Batches of 2; the handler fails once on UID 4: the cycle stops there with UIDs 1-3
    # saved, the error is reported, and the next cycle goes on from UID 4.
    settings = mailbox(batch_size=2)
    for i in range(5):
        dovecot.append(settings.user, message(i))
    handler = Recorder(fail_on=(4,))
    poller = poller_for(pollers, settings, sqlite_store, handler)
    assert await poller.poll_once() == 3
    assert poller.last_error is not None and "UID 4" in poller.last_error
    assert (await sqlite_store.load("test:mailbox")).last_uid == 3
    assert dovecot.uids(settings.user, criteria="UNSEEN") == [4, 5]

    assert await poller.poll_once() == 2
    assert handler.uids == [1, 2, 3, 4, 5]
    assert poller.last_error is None
    assert (await sqlite_store.load("test:mailbox")).last_uid == 5


async def test_processed_folder_receives_the_handled_messages(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
) -> None:
    settings = mailbox(processed_folder="Bounces done")
    for i in range(3):
        dovecot.append(settings.user, message(i))
    handler = Recorder()
    poller = poller_for(pollers, settings, sqlite_store, handler)
    assert await poller.poll_once() == 3
    assert dovecot.count(settings.user) == 0
    assert dovecot.count(settings.user, "Bounces done") == 3


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
async def test_tls(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
    mode: str,
) -> None:
    if mode == "implicit":
        settings = mailbox(port=dovecot.tls_port, use_tls=True, ssl_context=dovecot.ssl_context())
    else:
        settings = mailbox(starttls=True, ssl_context=dovecot.ssl_context())
    dovecot.append(settings.user, message(1))
    handler = Recorder()
    poller = poller_for(pollers, settings, sqlite_store, handler)
    assert await poller.poll_once() == 1, poller.last_error

    # Without the test CA the certificate is refused: an error, not an exception.
    untrusting = poller_for(
        pollers,
        dataclasses.replace(settings, ssl_context=None),
        MemoryMailboxStateStore(),
        Recorder(),
    )
    assert await untrusting.poll_once() == 0
    assert untrusting.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in (
        untrusting.last_error
    )


# -- failures --------------------------------------------------------------------------------


async def test_wrong_password_is_reported_then_recovered(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
) -> None:
    good = mailbox()
    dovecot.append(good.user, message(1))
    handler = Recorder()
    poller = poller_for(pollers, dataclasses.replace(good, password="wrong"), sqlite_store, handler)
    assert await poller.poll_once() == 0
    assert poller.last_error is not None and "refused" in poller.last_error
    assert not poller.connected and poller.failures == 1

    poller.settings = good
    assert await poller.poll_once() == 1
    assert poller.last_error is None and poller.failures == 0 and poller.connected


async def test_run_backs_off_logs_once_and_recovers(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = mailbox()
    dovecot.append(good.user, message(1))
    handler = Recorder()
    poller = poller_for(
        pollers,
        dataclasses.replace(good, password="wrong"),
        sqlite_store,
        handler,
        backoff_initial=0.02,
        backoff_max=0.1,
    )
    caplog.set_level(logging.INFO, logger="mail_proxy.core.imap.poller")
    task = asyncio.create_task(poller.run())
    try:
        await wait_until(lambda: poller.failures >= 3, "several failed cycles")
        assert not task.done()  # no exception escapes, no crash
        n = poller.failures
        assert poller.backoff_delay() == pytest.approx(min(0.02 * 2 ** (n - 1), 0.1))
        poller.failures = 30
        assert poller.backoff_delay() == 0.1  # capped
        poller.failures = n
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "refused" in warnings[0].getMessage()  # once per change

        poller.settings = good
        await wait_until(lambda: poller.last_error is None, "the recovery")
        assert handler.uids == [1] and poller.failures == 0
    finally:
        poller.stop()
        await asyncio.wait_for(task, 10)
    assert not poller.connected and not poller.has_lease


async def test_unreachable_server_is_an_error_not_an_exception(
    sqlite_store: SqlMailboxStateStore, pollers: list[ImapPoller]
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = MailboxSettings("127.0.0.1", port, "u", "p", use_tls=False, timeout=5)
    poller = poller_for(pollers, settings, sqlite_store, Recorder())
    assert await poller.poll_once() == 0
    assert poller.last_error is not None and f"127.0.0.1:{port}" in poller.last_error


# -- the lease -------------------------------------------------------------------------------


async def test_one_poller_per_mailbox_holds_the_lease(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    any_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
) -> None:
    settings = mailbox()
    for i in range(2):
        dovecot.append(settings.user, message(i))
    first, second = Recorder(), Recorder()
    a = poller_for(pollers, settings, any_store, first, owner="instance-a")
    b = poller_for(pollers, settings, any_store, second, owner="instance-b")
    assert await a.poll_once() == 2
    assert await b.poll_once() == 0
    assert a.has_lease and not b.has_lease and not b.connected and b.last_error is None

    dovecot.append(settings.user, message(2))
    assert await b.poll_once() == 0  # still A's
    await a.close()  # A hands over
    assert await b.poll_once() == 1
    assert b.has_lease and second.uids == [3] and first.uids == [1, 2]
    assert await a.poll_once() == 0 and not a.has_lease


async def test_lease_and_state_in_the_sql_store(any_store: SqlMailboxStateStore) -> None:
    now = [1000.0]
    store = SqlMailboxStateStore(any_store.engine, any_store.table, clock=lambda: now[0])
    assert await store.load("k") == MailboxState()
    assert await store.try_lease("k", "a", 30)
    assert await store.load("k") == MailboxState()  # the lease row holds no state yet
    assert not await store.try_lease("k", "b", 30)
    assert await store.try_lease("k", "a", 30)  # renewal
    now[0] += 29
    assert not await store.try_lease("k", "b", 30)  # renewed at 1000: valid until 1030
    now[0] += 2
    assert await store.try_lease("k", "b", 30)  # expired: taken over
    assert not await store.try_lease("k", "a", 30)
    await store.release("k", "a")  # not a's: nothing happens
    assert not await store.try_lease("k", "a", 30)
    await store.release("k", "b")
    assert await store.try_lease("k", "a", 30)

    await store.save("k", MailboxState(uidvalidity=7, last_uid=42))
    await store.save("other", MailboxState(uidvalidity=2**40, last_uid=2**33))
    assert await store.load("k") == MailboxState(uidvalidity=7, last_uid=42)
    assert await store.load("other") == MailboxState(uidvalidity=2**40, last_uid=2**33)
    assert not await store.try_lease("k", "b", 30)  # saving left the lease alone
    results = await asyncio.gather(*(store.try_lease("new", f"o{i}", 30) for i in range(8)))
    assert sum(results) == 1  # concurrent takers: exactly one wins


# -- waiting ---------------------------------------------------------------------------------


async def test_idle_wakes_on_a_new_message_and_survives_a_dropped_connection(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
) -> None:
    # poll_interval is a minute: only IDLE can bring the message within the wait below.
    settings = mailbox(poll_interval=60.0)
    handler = Recorder()
    poller = poller_for(pollers, settings, sqlite_store, handler, backoff_initial=0.05)
    task = asyncio.create_task(poller.run())
    try:
        await wait_until(lambda: poller.last_poll_ts is not None, "the first cycle")
        await asyncio.sleep(0)  # let it enter IDLE
        first_cycle = poller.last_poll_ts
        dovecot.append(settings.user, message(1))
        await wait_until(lambda: handler.uids == [1], "the message through IDLE")
        # The cycle is over (message flagged, state saved) when last_poll_ts moves.
        await wait_until(lambda: poller.last_poll_ts != first_cycle, "the end of the cycle")

        assert poller.connections == 1
        dovecot.kick(settings.user)  # the server drops the connection (in IDLE, or about to)
        await wait_until(lambda: poller.connections == 2, "the reconnection")
        dovecot.append(settings.user, message(2))
        await wait_until(lambda: handler.uids == [1, 2], "the message after reconnecting")
        assert poller.last_error is None
    finally:
        started = time.monotonic()
        poller.stop()
        await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 5  # stop() ends the IDLE at once
    assert not poller.connected


async def test_a_message_arriving_during_a_cycle_does_not_wait_for_the_poll_interval(
    dovecot: Dovecot,  # noqa: F811
    mailbox: Callable[..., MailboxSettings],
    sqlite_store: SqlMailboxStateStore,
    pollers: list[ImapPoller],
) -> None:
    # Message 2 arrives while message 1 is handled, after the SEARCH: the server announces it
    # with the answer to a later command (not again at IDLE); the poller must notice.
    settings = mailbox(poll_interval=60.0)
    dovecot.append(settings.user, message(1))
    seen: list[int] = []

    async def handler(uid: int, raw: bytes) -> None:
        if uid == 1 and not seen:
            dovecot.append(settings.user, message(2))
        seen.append(uid)

    poller = poller_for(pollers, settings, sqlite_store, handler)
    task = asyncio.create_task(poller.run())
    try:
        await wait_until(lambda: seen == [1, 2], "the message that came during the cycle")
    finally:
        poller.stop()
        await asyncio.wait_for(task, 10)
