"""Read the new messages of one IMAP folder, hand each to a handler, remember where it stopped.

:class:`ImapPoller` is the loop a mail-reading plugin (delivery notices, receipts) runs per
mailbox::

    async def handler(uid: int, raw: bytes) -> None:
        ...  # parse and record; must be idempotent (see below)

    poller = ImapPoller(settings, store, handler, key="notices:main")
    task = asyncio.create_task(poller.run())
    ...
    poller.stop(); await task

One cycle (:meth:`ImapPoller.poll_once`):

1. take (or renew) the mailbox's lease in the :class:`~.state.MailboxStateStore`; without it
   the poller does nothing (another instance polls this mailbox);
2. connect and log in when not connected (implicit TLS, STARTTLS or plain), SELECT the folder;
3. compare the folder's UIDVALIDITY with the stored one: when it differs, the server has
   renumbered the folder, and the stored UID means nothing any more: ``last_uid`` goes back to
   0 and the whole folder is read again (messages already handled come again: the handler
   must recognise them);
4. ``UID SEARCH UID <last_uid+1>:*`` (a server answers ``n:*`` with the highest UID even when
   it is below ``n``, so the answer is filtered), then in batches of ``batch_size``: the sizes
   (``RFC822.SIZE``), then each message under ``max_message_bytes`` with ``BODY.PEEK[]``,
   handed to the handler in UID order. After the handler returns, the message is flagged
   ``\\Seen`` or moved to ``processed_folder``. A message over the size cap is not read: it is
   logged, counted in ``skipped_too_large`` and left in place, and its UID is passed over;
5. the new ``last_uid`` is saved after each batch (and when the cycle stops early).

A mailbox never polled before is read from its first message: everything already in the
folder, ``\\Seen`` or not, goes to the handler.

Delivery is at least once. A crash re-reads at most the batch in progress, a UIDVALIDITY
change re-reads the folder, and a message handled just before its ``\\Seen`` flag or move
failed comes again: the handler must be idempotent (key its effects on something in the
message, e.g. the Message-ID of the mail it reports on, not on the UID). A handler that raises stops
the cycle at that message: it is retried at the next cycle (with backoff), so a handler should
raise only for transient trouble and return normally (after logging) for a message it cannot
use, or the mailbox stays stuck on it.

Between cycles (:meth:`ImapPoller.run`): with IDLE in the server's CAPABILITY the connection
waits in IDLE until the server announces a new message (EXISTS) or ``poll_interval`` passes
(never more than 29 minutes, the limit servers allow); without IDLE it sleeps
``poll_interval``. (A message announced while the cycle ran makes the next cycle start at
once.) A failed cycle (connection refused or dropped, login refused, handler
error, store error) sets ``last_error``, logs it once per change and retries with exponential
backoff (up to ``backoff_max``); nothing escapes :meth:`~ImapPoller.run` or
:meth:`~ImapPoller.poll_once` but cancellation.

Folder names are sent as IMAP strings: plain ASCII names only (no modified UTF-7).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aioimaplib

from .state import MailboxState, MailboxStateStore

log = logging.getLogger(__name__)

Handler = Callable[[int, bytes], Awaitable[None]]
T = TypeVar("T")

#: Most message bytes one ``UID FETCH`` of bodies brings in (a batch's bodies are fetched in
#: as few commands as this allows, so memory stays bounded whatever the batch size).
FETCH_BYTES = 4 * 1024 * 1024
IDLE_MAX_SECONDS = 29 * 60  # RFC 2177: servers may drop an IDLE client after 30 minutes

_UIDVALIDITY_RE = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)
_FETCH_RE = re.compile(rb"^\d+ FETCH \((.*)$", re.IGNORECASE | re.DOTALL)
_UID_RE = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)
_BODY_LITERAL_RE = re.compile(rb"\bBODY\[\] \{(\d+)\}$", re.IGNORECASE)
_EXISTS_RE = re.compile(rb"^\* \d+ EXISTS\b", re.IGNORECASE)
_ATOM_RE = re.compile(r"[A-Za-z0-9._@+\-]+")


@dataclass
class MailboxSettings:
    """Where the mailbox is and how to read it.

    ``use_tls``: TLS from the first byte (port 993); ``starttls``: plain connection upgraded
    with STARTTLS (port 143); neither: plain IMAP (loopback and tests only). ``ssl_context``
    replaces the default (system CAs, hostname checked), e.g. to trust a test CA.
    ``processed_folder``: move each handled message there (created if missing) instead of
    flagging it ``\\Seen``. ``timeout``: seconds for connecting and for each IMAP command.
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    use_tls: bool = True
    starttls: bool = False
    poll_interval: float = 60.0
    batch_size: int = 100
    max_message_bytes: int = 10 * 1024 * 1024
    processed_folder: str | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.use_tls and self.starttls:
            raise ValueError("use_tls (implicit TLS) and starttls exclude each other")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.poll_interval <= 0 or self.timeout <= 0:
            raise ValueError("poll_interval and timeout must be positive")
        if self.max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")


class ImapError(Exception):
    """The server refused something (login, SELECT, ...) or answered unexpectedly."""


class _HandlerFailed(Exception):
    def __init__(self, uid: int, cause: BaseException) -> None:
        super().__init__(f"handler failed on UID {uid}: {cause!r}")
        self.uid = uid


class _LeaseLost(Exception):
    pass


def _quote(value: str) -> str:
    """An IMAP astring: atoms as they are, anything else as a quoted string."""
    if _ATOM_RE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uid_set(uids: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1:3,7"``."""
    ranges: list[str] = []
    start = prev = None
    for uid in sorted(uids):
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            ranges.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start is not None:
        ranges.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(ranges)


def _next_fetch(readable: list[int], first: int, sizes: dict[int, int]) -> list[int]:
    """``first`` and the readable UIDs after it, as many as fit in :data:`FETCH_BYTES` (at
    least one)."""
    chosen: list[int] = []
    total = 0
    for uid in readable[readable.index(first) :]:
        if chosen and total + sizes[uid] > FETCH_BYTES:
            break
        chosen.append(uid)
        total += sizes[uid]
    return chosen


def _text(response: Any) -> str:
    parts = [bytes(x).decode("utf-8", "replace") for x in response.lines if x]
    return " ".join(parts)[:300]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, aioimaplib.CommandTimeout)):
        return "timeout waiting for the server"
    if isinstance(exc, (ImapError, _HandlerFailed)):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ImapPoller:
    """Poll one mailbox folder (see the module docstring for what a cycle does).

    ``key`` names the mailbox in the state store (e.g. ``"notices:<account>"``); ``owner``
    names this instance for the lease (default: host, pid and a random suffix). The lease lasts
    ``lease_ttl`` seconds (default: three poll intervals, at least 60 s) and is renewed at each
    cycle and during long ones.

    Status, readable at any time: ``connected``, ``has_lease``, ``last_poll_ts`` (end of the
    last successful cycle, epoch seconds), ``uidvalidity``, ``last_uid``, ``last_error`` (None
    after a successful cycle), ``processed`` (messages handled), ``skipped_too_large``,
    ``connections`` (successful logins), ``failures`` (consecutive failed cycles);
    :meth:`status` returns them as a dict.
    """

    def __init__(
        self,
        settings: MailboxSettings,
        store: MailboxStateStore,
        handler: Handler,
        key: str,
        *,
        owner: str | None = None,
        lease_ttl: float | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 300.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.handler = handler
        self.key = key
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = lease_ttl
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max

        self.connected = False
        self.has_lease = False
        self.last_poll_ts: float | None = None
        self.uidvalidity: int | None = None
        self.last_uid = 0
        self.last_error: str | None = None
        self.processed = 0
        self.skipped_too_large = 0
        self.connections = 0  # successful logins (reconnections included)
        self.failures = 0  # consecutive failed cycles (drives the backoff)

        self._client: aioimaplib.IMAP4 | None = None
        self._stopping = asyncio.Event()
        self._lost = asyncio.Event()
        self._lease_renewed_at = 0.0
        self._connection_token: object | None = None
        self._news = False  # the server announced a message (EXISTS) since the last SELECT
        self._handled = 0  # messages handled in the current cycle
        self._cycle_lock = asyncio.Lock()

    # -- public ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "connected": self.connected,
            "has_lease": self.has_lease,
            "last_poll_ts": self.last_poll_ts,
            "uidvalidity": self.uidvalidity,
            "last_uid": self.last_uid,
            "last_error": self.last_error,
            "processed": self.processed,
            "skipped_too_large": self.skipped_too_large,
            "connections": self.connections,
            "failures": self.failures,
        }

    @property
    def effective_lease_ttl(self) -> float:
        if self.lease_ttl is not None:
            return self.lease_ttl
        return max(3 * self.settings.poll_interval, 60.0)

    async def poll_once(self) -> int:
        """One cycle; returns how many messages the handler took. Never raises (but for
        cancellation): a failure is in ``last_error``. The connection stays open for the next
        cycle; :meth:`close` ends it. For tests and manual runs: not while :meth:`run` runs."""
        _ok, handled = await self._cycle()
        return handled

    async def run(self) -> None:
        """Poll until :meth:`stop`; then log out and give the lease up."""
        try:
            while not self._stopping.is_set():
                ok, _ = await self._cycle()
                if self._stopping.is_set():
                    break
                if not ok:
                    await self._sleep(self.backoff_delay())
                elif not self.has_lease:
                    await self._sleep(self.settings.poll_interval)  # someone else polls
                else:
                    await self._wait_for_news()
        finally:
            await self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (it ends the IDLE or sleep at once, a cycle after the
        message in hand). Final: a stopped poller reads nothing more; make a new one."""
        self._stopping.set()

    async def close(self) -> None:
        """Log out and release the lease (after :meth:`poll_once` use, or to hand over)."""
        await self._disconnect()
        if self.has_lease:
            self.has_lease = False
            try:
                await self.store.release(self.key, self.owner)
            except Exception as exc:
                log.warning("imap %s: releasing the lease failed: %s", self.key, _describe(exc))

    def backoff_delay(self) -> float:
        """Seconds to wait after ``failures`` consecutive failed cycles."""
        if self.failures <= 0:
            return 0.0
        return float(min(self.backoff_initial * 2 ** min(self.failures - 1, 30), self.backoff_max))

    # -- one cycle ------------------------------------------------------------------------

    async def _cycle(self) -> tuple[bool, int]:
        async with self._cycle_lock:
            self._handled = 0
            try:
                if not await self._take_lease():
                    await self._disconnect()
                    return True, 0
                if not self.connected:
                    await self._connect()
                await self._read_new()
            except asyncio.CancelledError:
                raise
            except _LeaseLost:
                await self._disconnect()
                return True, self._handled
            except Exception as exc:
                self.failures += 1
                self._set_error(exc)
                if not isinstance(exc, _HandlerFailed):
                    await self._disconnect()
                return False, self._handled
            self.failures = 0
            self.last_poll_ts = time.time()
            self._set_error(None)
            return True, self._handled

    def _set_error(self, exc: BaseException | None) -> None:
        message = None if exc is None else _describe(exc)
        if message == self.last_error:
            if message is not None:
                log.debug("imap %s: still failing: %s", self.key, message)
            return
        if message is None:
            log.info("imap %s: polling again after: %s", self.key, self.last_error)
        elif isinstance(exc, _HandlerFailed):
            log.warning("imap %s: %s", self.key, message, exc_info=exc.__cause__)
        else:
            log.warning("imap %s: %s", self.key, message)
        self.last_error = message

    async def _take_lease(self) -> bool:
        held = await self.store.try_lease(self.key, self.owner, self.effective_lease_ttl)
        if held:
            self._lease_renewed_at = time.monotonic()
        if held != self.has_lease:
            if held:
                log.info("imap %s: lease taken by %s", self.key, self.owner)
            else:
                log.info("imap %s: lease held elsewhere, %s waits", self.key, self.owner)
        self.has_lease = held
        return held

    async def _renew_lease_if_due(self) -> None:
        if time.monotonic() - self._lease_renewed_at >= self.effective_lease_ttl / 3:
            if not await self._take_lease():
                raise _LeaseLost

    async def _read_new(self) -> None:
        client = self._require_client()
        s = self.settings
        response = await self._call(client.select(_quote(s.folder)))
        if response.result != "OK":
            raise ImapError(f"SELECT {s.folder}: {_text(response)}")
        self._news = False  # what SELECT reported is what this cycle reads
        uidvalidity = self._uidvalidity(response)

        state = await self.store.load(self.key)
        if state.uidvalidity != uidvalidity:
            if state.uidvalidity is not None:
                log.warning(
                    "imap %s: UIDVALIDITY of %s changed (%s -> %s): reading the folder again",
                    self.key,
                    s.folder,
                    state.uidvalidity,
                    uidvalidity,
                )
            state = MailboxState(uidvalidity=uidvalidity, last_uid=0)
            await self.store.save(self.key, state)
        self.uidvalidity = uidvalidity
        self.last_uid = state.last_uid

        uids = await self._search_new(state.last_uid)
        for start in range(0, len(uids), s.batch_size):
            batch = uids[start : start + s.batch_size]
            try:
                await self._read_batch(batch)
            finally:
                if self.last_uid != state.last_uid:
                    state = MailboxState(uidvalidity=uidvalidity, last_uid=self.last_uid)
                    await self.store.save(self.key, state)
            if self._stopping.is_set():
                break
            await self._renew_lease_if_due()

    async def _read_batch(self, batch: list[int]) -> None:
        """Read one batch: sizes in one command, bodies in as few commands as
        :data:`FETCH_BYTES` allows, the handler per message in UID order, then every handled
        message marked done in one command (also when a handler fails part-way)."""
        client = self._require_client()
        s = self.settings
        sizes = await self._fetch_sizes(batch)
        readable = [
            u for u in batch if sizes.get(u) is not None and sizes[u] <= s.max_message_bytes
        ]
        bodies: dict[int, bytes] = {}
        done: list[int] = []
        try:
            for uid in batch:
                if self._stopping.is_set():
                    break
                size = sizes.get(uid)
                raw = None
                if size is None:
                    log.info("imap %s: UID %d vanished before it was read", self.key, uid)
                elif size > s.max_message_bytes:
                    self.skipped_too_large += 1
                    log.warning(
                        "imap %s: UID %d skipped: %d bytes, over the %d-byte cap (left in %s)",
                        self.key,
                        uid,
                        size,
                        s.max_message_bytes,
                        s.folder,
                    )
                else:
                    if uid not in bodies:
                        bodies = await self._fetch_bodies(client, _next_fetch(readable, uid, sizes))
                    raw = bodies.pop(uid, None)
                    if raw is None:
                        log.info("imap %s: UID %d vanished before it was read", self.key, uid)
                if raw is not None:
                    try:
                        await self.handler(uid, raw)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        raise _HandlerFailed(uid, exc) from exc
                    done.append(uid)
                    self.processed += 1
                    self._handled += 1
                self.last_uid = uid
                await self._renew_lease_if_due()
        except Exception:
            if done:  # best effort: the handled ones are not read again (last_uid) anyway
                with contextlib.suppress(Exception):
                    await self._mark_done(client, done)
            raise
        if done:
            await self._mark_done(client, done)

    async def _search_new(self, last_uid: int) -> list[int]:
        client = self._require_client()
        response = await self._call(client.uid_search(f"UID {last_uid + 1}:*", charset=None))
        if response.result != "OK":
            raise ImapError(f"UID SEARCH: {_text(response)}")
        uids: set[int] = set()
        for line in response.lines[:-1]:  # the last line is the completion text
            if isinstance(line, (bytes, bytearray)) and re.fullmatch(rb"[\d ]*", line):
                uids.update(int(x) for x in line.split())
        return sorted(uid for uid in uids if uid > last_uid)

    async def _fetch_sizes(self, batch: list[int]) -> dict[int, int]:
        client = self._require_client()
        response = await self._call(client.uid("fetch", _uid_set(batch), "(UID RFC822.SIZE)"))
        if response.result != "OK":
            raise ImapError(f"UID FETCH RFC822.SIZE: {_text(response)}")
        sizes: dict[int, int] = {}
        for line in response.lines:
            if not isinstance(line, (bytes, bytearray)):
                continue
            match = _FETCH_RE.match(line)
            if not match:
                continue
            uid = _UID_RE.search(match.group(1))
            size = _SIZE_RE.search(match.group(1))
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    async def _fetch_bodies(self, client: aioimaplib.IMAP4, uids: list[int]) -> dict[int, bytes]:
        """The bodies of ``uids`` in one ``UID FETCH``, by UID (a vanished one is absent)."""
        response = await self._call(client.uid("fetch", _uid_set(uids), "(UID BODY.PEEK[])"))
        if response.result != "OK":
            raise ImapError(f"UID FETCH BODY.PEEK[]: {_text(response)}")
        wanted = set(uids)
        bodies: dict[int, bytes] = {}
        lines = response.lines
        for i, line in enumerate(lines[:-1]):
            if not isinstance(line, bytes) or not _FETCH_RE.match(line):
                continue
            literal = _BODY_LITERAL_RE.search(line)
            header_uid = _UID_RE.search(line)
            if not literal or not header_uid or int(header_uid.group(1)) not in wanted:
                continue  # no body, or an unsolicited FETCH about another message
            body = lines[i + 1]
            if isinstance(body, (bytes, bytearray)) and len(body) == int(literal.group(1)):
                bodies[int(header_uid.group(1))] = bytes(body)
        return bodies

    async def _mark_done(self, client: aioimaplib.IMAP4, uids: list[int]) -> None:
        """Flag ``uids`` \\Seen (or move them to ``processed_folder``), in one command each."""
        uid = _uid_set(uids)
        s = self.settings
        if s.processed_folder is None:
            response = await self._call(client.uid("store", uid, "+FLAGS.SILENT", r"(\Seen)"))
            if response.result != "OK":
                raise ImapError(f"UID STORE {uid} \\Seen: {_text(response)}")
            return
        target = _quote(s.processed_folder)
        if client.has_capability("MOVE"):
            response = await self._call(client.uid("move", uid, target))
            if response.result != "OK":
                raise ImapError(f"UID MOVE {uid} {s.processed_folder}: {_text(response)}")
            return
        response = await self._call(client.uid("copy", uid, target))
        if response.result != "OK":
            raise ImapError(f"UID COPY {uid} {s.processed_folder}: {_text(response)}")
        response = await self._call(client.uid("store", uid, "+FLAGS.SILENT", r"(\Seen \Deleted)"))
        if response.result != "OK":
            raise ImapError(f"UID STORE {uid} \\Deleted: {_text(response)}")
        if client.has_capability("UIDPLUS"):
            response = await self._call(client.uid("expunge", uid))
        else:  # plain EXPUNGE also removes messages others marked \Deleted in this folder
            response = await self._call(client.expunge())
        if response.result != "OK":
            raise ImapError(f"EXPUNGE {uid}: {_text(response)}")

    @staticmethod
    def _uidvalidity(select_response: Any) -> int:
        for line in select_response.lines:
            if isinstance(line, (bytes, bytearray)):
                match = _UIDVALIDITY_RE.search(line)
                if match:
                    return int(match.group(1))
        raise ImapError("SELECT answered without UIDVALIDITY")

    # -- connection -----------------------------------------------------------------------

    async def _call(self, command: Awaitable[T]) -> T:
        """Await an IMAP command, failing at once if the connection drops meanwhile
        (aioimaplib would wait for the timeout), and after ``timeout`` seconds."""
        task = asyncio.ensure_future(command)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=self.settings.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task in done:
            return task.result()
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nothing to report
        if lost in done:
            raise ImapError("connection lost")
        raise asyncio.TimeoutError

    def _require_client(self) -> aioimaplib.IMAP4:
        if self._client is None or not self.connected:
            raise ImapError("not connected")
        return self._client

    def _ssl_context(self) -> ssl.SSLContext:
        return self.settings.ssl_context or ssl.create_default_context()

    async def _connect(self) -> None:
        s = self.settings
        self._lost.clear()
        token = self._connection_token = object()

        def lost(_exc: Exception | None) -> None:
            # Only this connection's loss counts (an old one may report its end late).
            if self._connection_token is token:
                self.connected = False
                self._lost.set()

        client = aioimaplib.IMAP4(
            host=s.host,
            port=s.port,
            timeout=s.timeout,
            conn_lost_cb=lost,
            ssl_context=self._ssl_context() if s.use_tls else None,
        )
        self._watch_exists(client)
        self._client = client
        try:
            try:
                await self._call(client.wait_hello_from_server())
            except (OSError, asyncio.TimeoutError) as exc:
                raise ImapError(f"connect to {s.host}:{s.port}: {_describe(exc)}") from exc
            if s.starttls:
                await self._starttls(client)
            response = await self._call(client.login(_quote(s.user), s.password))
            if response.result != "OK":
                raise ImapError(f"login as {s.user} refused: {_text(response)}")
            # The list can change after login.
            await self._call(client.protocol.capability())
            if s.processed_folder is not None:
                # NO when it exists already: fine; a real problem shows at the first MOVE.
                await self._call(client.create(_quote(s.processed_folder)))
        except BaseException:
            self._client = None
            self._close_transport(client)
            raise
        self.connected = True
        self.connections += 1
        log.info(
            "imap %s: connected to %s:%s as %s%s",
            self.key,
            s.host,
            s.port,
            s.user,
            " (IDLE)" if client.has_capability("IDLE") else "",
        )

    def _watch_exists(self, client: aioimaplib.IMAP4) -> None:
        """Note the EXISTS announcements that come with other commands' answers.

        A message arriving during a cycle is announced (``* n EXISTS``) at the end of whatever
        command runs then, possibly after the SEARCH that could have found it; the server does
        not announce it again at IDLE, and aioimaplib drops untagged answers no command
        expects. Seen here, it makes the next wait end at once. (Hooks aioimaplib's internal
        ``_untagged_response``; without it such a message waits for ``poll_interval``.)
        """
        protocol = client.protocol
        original = getattr(protocol, "_untagged_response", None)
        if original is None:
            return

        def untagged(line: bytes) -> Any:
            if _EXISTS_RE.match(line):
                self._news = True
            return original(line)

        protocol._untagged_response = untagged

    async def _starttls(self, client: aioimaplib.IMAP4) -> None:
        s = self.settings
        protocol = client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError(f"{s.host}:{s.port} does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await self._call(protocol.execute(command))
        if response.result != "OK":
            raise ImapError(f"STARTTLS refused: {_text(response)}")
        loop = asyncio.get_running_loop()
        transport = await asyncio.wait_for(
            loop.start_tls(
                protocol.transport, protocol, self._ssl_context(), server_hostname=s.host
            ),
            s.timeout,
        )
        if transport is None:
            raise ImapError("STARTTLS: the TLS handshake did not complete")
        protocol.transport = transport
        await self._call(protocol.capability())  # forget pre-TLS answers

    async def _disconnect(self) -> None:
        self._connection_token = None
        client, self._client = self._client, None
        was_connected, self.connected = self.connected, False
        if client is None:
            return
        if was_connected:
            with contextlib.suppress(Exception):
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(client.logout(), min(self.settings.timeout, 5.0))
        self._close_transport(client)

    @staticmethod
    def _close_transport(client: aioimaplib.IMAP4) -> None:
        connecting = getattr(client, "_client_task", None)  # aioimaplib >= 2.0.3
        if connecting is not None and not connecting.done():
            connecting.cancel()
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.close()

    # -- waiting --------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_news(self) -> None:
        """IDLE until a new message, ``poll_interval`` or :meth:`stop`; else just sleep.

        The wait never exceeds half the lease TTL (the lease is renewed by the next cycle).
        After a dropped connection it pauses ``backoff_initial`` before the next cycle, so a
        server that keeps dropping the connection does not get a reconnection storm.
        """
        wait = min(self.settings.poll_interval, IDLE_MAX_SECONDS, self.effective_lease_ttl / 2)
        client = self._client
        if self._news:
            return  # announced during the cycle: read it now
        if client is None or not self.connected or not client.has_capability("IDLE"):
            await self._sleep(wait)
            return
        queue = client.protocol.idle_queue
        while not queue.empty():  # pushes left over from an earlier IDLE
            queue.get_nowait()
        try:
            idle = await self._call(client.idle_start(timeout=wait))
        except Exception as exc:
            await self._disconnect()
            if self._lost.is_set():
                log.info("imap %s: connection lost, reconnecting", self.key)
                await self._sleep(self.backoff_initial)
                return
            # A server refusing IDLE: poll on a timer instead (a new connection tries again).
            log.warning(
                "imap %s: IDLE failed (%s): polling every %ss", self.key, _describe(exc), wait
            )
            await self._sleep(wait)
            return
        deadline = time.monotonic() + wait
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                push = asyncio.ensure_future(client.wait_server_push(timeout=remaining + 1))
                stop = asyncio.ensure_future(self._stopping.wait())
                lost = asyncio.ensure_future(self._lost.wait())
                waiters = {push, stop, lost}
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if not push.done() or push.cancelled() or push.exception() is not None:
                    return
                lines = push.result()
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    return
                if any(b"EXISTS" in bytes(line).upper() for line in lines):
                    return
                # Flag changes, expunges, ...: nothing new to read; keep idling.
        finally:
            await self._end_idle(client, idle)
            if self._lost.is_set():
                log.info("imap %s: connection lost, reconnecting", self.key)
                await self._disconnect()
                await self._sleep(self.backoff_initial)

    async def _end_idle(self, client: aioimaplib.IMAP4, idle: asyncio.Future[Any]) -> None:
        if not self.connected:
            idle.cancel()
            return
        try:
            if client.has_pending_idle():
                client.idle_done()
            await asyncio.wait_for(idle, self.settings.timeout)
        except Exception as exc:
            log.warning("imap %s: ending IDLE failed: %s", self.key, _describe(exc))
            await self._disconnect()
