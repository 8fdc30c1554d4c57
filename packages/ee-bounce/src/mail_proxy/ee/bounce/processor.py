"""What happens to the messages read from a bounce mailbox, and when it is committed.

:meth:`MailboxProcessor.handle` is the IMAP poller's handler: it parses the message
(:func:`~.parsing.parse_bounce`, CPU only) and keeps it. :meth:`MailboxProcessor.flush` does
the rest for everything kept, with a few queries per batch rather than a few per message:
bounces read before (``bounce_seen``) are dropped, bounces and complaints are matched to their
messages (:meth:`.correlate.Correlator.match_all`), then

1. the ``bounce_seen`` rows are written as ``pending`` (one transaction);
2. the events go through ``runtime.record_events`` (one transaction: reported, shown on the
   message, told to plugins);
3. the rows get their outcome, the suppressions are written (one transaction).

The poller saves its place in the mailbox after each batch; the plugin hands it a state store
(:class:`FlushingStateStore`) that flushes before saving, so a UID is never saved as read
before its effects are committed. A crash re-reads at most one batch, and nothing is recorded
twice: a bounce found ``pending`` (a crash between 1 and 3) has its events compared with the
message's stored ones first, and the same bounce twice in one batch is kept once.

The identity of a bounce is its own Message-ID (a server sends one notice once; a copy
delivered twice has the same one), else a digest of its content below the headers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mail_proxy.core.contracts.model import NewEvent

from . import schema
from .correlate import Attributed, Correlator, Match, attribute
from .events import BOUNCE, COMPLAINT
from .metrics import BounceMetrics
from .sqlutil import insert_ignore
from .suppression import SUPPRESSING_REASONS, Suppression, Suppressions

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import MessageRecord
    from mail_proxy.core.engine.runtime import Runtime
    from mail_proxy.core.imap.state import MailboxState, MailboxStateStore
    from mail_proxy.ee.bounce.parsing import BounceReport

log = logging.getLogger(__name__)
_HEADERS = BytesHeaderParser(policy=compat32)
MAX_KEY = 200
#: ``bounce_seen.outcome`` while a bounce's effects are being committed.
PENDING = "pending"


@dataclass
class _Read:
    """One message read, waiting for :meth:`MailboxProcessor.flush`."""

    uid: int
    key: str
    report: BounceReport
    headers: Message
    outcome: str = ""
    events: list[NewEvent] = field(default_factory=list)
    suppress: list[Suppression] = field(default_factory=list)
    tenant_id: str | None = None
    message_id: str | None = None
    #: Seen before as ``pending``: a crash interrupted its commit; compare with stored events.
    resumed: bool = False


def bounce_key(headers: Message, raw: bytes) -> str:
    """The bounce's identity (see the module docstring)."""
    own = " ".join(str(headers.get("Message-ID") or "").split())
    if own:
        return f"mid:{own}" if len(own) <= MAX_KEY else f"mid#{_digest(own.encode())}"
    cut = raw.find(b"\r\n\r\n")
    cut = raw.find(b"\n\n") if cut < 0 else cut
    return f"body#{_digest(raw[cut:] if cut >= 0 else raw)}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:40]


class MailboxProcessor:
    """The handler of one mailbox's poller (see the module docstring)."""

    def __init__(self, runtime: Runtime, mailbox_key: str, correlator: Correlator) -> None:
        self.rt = runtime
        self.mailbox_key = mailbox_key
        self.correlator = correlator
        self.metrics = runtime.local(BounceMetrics)
        self._pending: dict[str, _Read] = {}

    async def handle(self, uid: int, raw: bytes) -> None:
        from mail_proxy.ee.bounce.parsing import parse_bounce

        headers = _HEADERS.parsebytes(raw, headersonly=True)
        key = bounce_key(headers, raw)
        if key not in self._pending:
            self._pending[key] = _Read(uid, key, parse_bounce(raw), headers)

    async def flush(self) -> None:
        """Commit what was read since the last flush (see the module docstring)."""
        if not self._pending:
            return
        reads = await self._unseen(list(self._pending.values()))
        if reads:
            await self._decide(reads)
            await self._commit(reads)
        self._pending.clear()

    async def _unseen(self, reads: list[_Read]) -> list[_Read]:
        """``reads`` less the bounces already handled (``pending`` ones are kept, marked)."""
        t = schema.seen.c
        known: dict[str, str] = {}
        keys = [r.key for r in reads]
        async with self.rt.storage.database.connect() as conn:
            for start in range(0, len(keys), 500):
                query = sa.select(t.bounce_key, t.outcome).where(
                    t.mailbox_key == self.mailbox_key, t.bounce_key.in_(keys[start : start + 500])
                )
                known.update({row.bounce_key: row.outcome for row in await conn.execute(query)})
        fresh = []
        for read in reads:
            outcome = known.get(read.key)
            if outcome is None or outcome == PENDING:
                read.resumed = outcome == PENDING
                fresh.append(read)
        return fresh

    async def _decide(self, reads: list[_Read]) -> None:
        for read in reads:
            self.metrics.read.labels(kind=read.report.kind).inc()
            read.outcome = read.report.kind
        relevant = [r for r in reads if r.report.kind in ("bounce", "complaint")]
        matches = await self.correlator.match_all([(r.report, r.headers) for r in relevant])
        for read, match in zip(relevant, matches, strict=True):
            if match.record is None:
                read.outcome = match.status
                log.info(
                    "bounce %s UID %d: %s %s (%s)",
                    self.mailbox_key,
                    read.uid,
                    read.report.kind,
                    match.status,
                    match.detail,
                )
            else:
                self._effects(read, match)

    def _effects(self, read: _Read, match: Match) -> None:
        record, report = match.record, read.report
        assert record is not None
        read.tenant_id, read.message_id = record.tenant_id, record.id
        now = time.time()
        if report.kind == "complaint":
            for item in attribute(record, report.recipients):
                meta = _base(read.key, self.mailbox_key, match, item)
                read.events.append(
                    NewEvent(record.tenant_id, record.id, COMPLAINT, now, "spam complaint", meta)
                )
        else:
            failures = [r for r in report.recipients if r.type in ("hard", "soft")]
            for item in attribute(record, failures):
                read.events.append(_bounce_event(read.key, self.mailbox_key, match, item, now))
                f = item.failure
                if item.exact and f.type == "hard" and f.reason in SUPPRESSING_REASONS:
                    read.suppress.append(_suppression(record, item, now))
        read.outcome = "recorded" if read.events else "no_recipient"

    async def _commit(self, reads: list[_Read]) -> None:
        engine = self.rt.storage.database
        t = schema.seen
        now = time.time()
        rows = [
            {
                "mailbox_key": self.mailbox_key,
                "bounce_key": r.key,
                "seen_at": now,
                "outcome": PENDING,
                "tenant_id": r.tenant_id,
                "message_id": r.message_id,
            }
            for r in reads
        ]
        async with engine.begin() as conn:
            await insert_ignore(conn, t, rows)
        events = [e for r in reads if not r.resumed for e in r.events]
        events += await self._not_recorded([e for r in reads if r.resumed for e in r.events])
        recorded = await self.rt.record_events(events) if events else []
        async with engine.begin() as conn:
            by_outcome: dict[str, list[str]] = {}
            for read in reads:
                by_outcome.setdefault(read.outcome, []).append(read.key)
            for outcome, keys in by_outcome.items():
                for start in range(0, len(keys), 500):
                    await conn.execute(
                        t.update()
                        .where(
                            t.c.mailbox_key == self.mailbox_key,
                            t.c.bounce_key.in_(keys[start : start + 500]),
                        )
                        .values(outcome=outcome)
                    )
            await self.rt.local(Suppressions).add([s for r in reads for s in r.suppress], conn)
        for event in recorded:
            if event.event_type == BOUNCE:
                meta = event.metadata
                self.metrics.bounces.labels(
                    tenant_id=event.tenant_id,
                    type=meta.get("bounce_type") or "",
                    reason=meta.get("bounce_reason") or "",
                ).inc()
        for read in reads:
            if read.outcome in ("unmatched", "forged", "foreign_tenant"):
                self.metrics.rejected.labels(why=read.outcome).inc()

    async def _not_recorded(self, events: list[NewEvent]) -> list[NewEvent]:
        """``events`` less those the message already has (same bounce, same recipient)."""
        by_message: dict[tuple[str, str], list[NewEvent]] = {}
        for event in events:
            by_message.setdefault((event.tenant_id, event.message_id), []).append(event)
        fresh: list[NewEvent] = []
        for (tenant_id, message_id), wanted in by_message.items():
            stored = await self.rt.storage.list_events(tenant_id, message_id) or []
            have = {_identity(e.event_type, e.metadata) for e in stored}
            for event in wanted:
                identity = _identity(event.event_type, event.metadata)
                if identity not in have:
                    have.add(identity)
                    fresh.append(event)
        return fresh


def _identity(event_type: str, meta: dict[str, Any] | None) -> tuple[str, Any, Any]:
    meta = meta or {}
    return event_type, meta.get("bounce_key"), meta.get("recipient")


def _base(key: str, mailbox: str, match: Match, item: Attributed) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "recipient": item.recipient,
        "bounce_key": key,
        "matched_by": match.matched_by,
        "mailbox": mailbox,
        "account_id": match.record.account_id if match.record else None,
    }
    if not item.exact:
        meta["reported_address"] = item.reported_address
    return meta


def _bounce_event(key: str, mailbox: str, match: Match, item: Attributed, now: float) -> NewEvent:
    assert match.record is not None
    f = item.failure
    code = f.status or f.smtp_code or ""
    meta = _base(key, mailbox, match, item)
    meta.update(
        bounce_type=f.type,
        bounce_code=code,
        bounce_reason=f.reason,
        diagnostic=f.diagnostic,
        rule=f.rule,
        status=f.status,
        smtp_code=f.smtp_code,
    )
    text = f"{f.type} bounce {code or '?'} ({f.reason}) for {item.recipient}"
    return NewEvent(match.record.tenant_id, match.record.id, BOUNCE, now, text, meta)


def _suppression(record: MessageRecord, item: Attributed, now: float) -> Suppression:
    f = item.failure
    return Suppression(
        tenant_id=record.tenant_id,
        address=item.recipient,
        reason=f.reason,
        code=f.status or f.smtp_code or None,
        source="bounce",
        note=(f.diagnostic or "")[:500] or None,
        message_id=record.id,
        created_at=now,
        updated_at=now,
    )


class FlushingStateStore:
    """A mailbox state store that flushes the processor before each save (see the module
    docstring); everything else goes to the store it wraps."""

    def __init__(self, inner: MailboxStateStore, processor: MailboxProcessor) -> None:
        self.inner = inner
        self.processor = processor

    async def load(self, key: str) -> MailboxState:
        return await self.inner.load(key)

    async def save(self, key: str, state: MailboxState) -> None:
        await self.processor.flush()
        await self.inner.save(key, state)

    async def try_lease(self, key: str, owner: str, ttl_seconds: float) -> bool:
        return await self.inner.try_lease(key, owner, ttl_seconds)

    async def release(self, key: str, owner: str) -> None:
        await self.inner.release(key, owner)
