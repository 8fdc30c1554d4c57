"""One message read from a PEC account's mailbox: parsed, matched, recorded once.

:class:`ReceiptHandler` is the IMAP poller's handler for one PEC account. For each message:

1. :func:`~.parsing.parse_receipt`; mail that is not a receipt (incoming certified mail,
   anomaly envelopes, anything else) is counted and left alone;
2. the receipt's key (:func:`receipt_key`) is looked up in ``pec_receipts``: a receipt
   already handled is skipped;
3. the message it refers to is found by its generated Message-ID: the
   ``X-Riferimento-Message-ID`` header first, then daticert's signed ``<msgid>``. Only a
   message of *this* account (same tenant, same account) may change: a receipt naming an
   unknown Message-ID or another account's message changes nothing and is counted;
4. the event (:data:`~.parsing.EVENTS`) is recorded through ``Runtime.record_events``, with
   the receipt's key in its metadata. A second receipt that says what the message's events
   already say (a second acceptance, a second delivery to one recipient) is a duplicate;
5. the receipt is remembered in ``pec_receipts``.

A crash between 4 and 5 re-reads the receipt after the restart: step 4 then finds the
receipt's key among the message's events and records nothing. The poller flags the message
``\\Seen`` after the handler returns; a handler error (the database away) leaves it to be
read again at the next cycle.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.model import EventRecord, MessageRef, NewEvent

from . import events as ev
from .metrics import PecMetrics
from .parsing import PecReceipt, parse_receipt
from .tables import TrackedMessage, tables_of

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)

#: receipt kinds whose recipient-less receipt concerns every recipient
_ALL_RECIPIENTS = {"accettazione", "non-accettazione"}


def receipt_key(receipt: PecReceipt) -> str:
    """What identifies one receipt, digested: its own Message-ID, kind, reference,
    recipient, the provider's identifier and time (the same receipt read twice gives the same
    key; two receipts of one message never do)."""
    parts = (
        receipt.message_id,
        receipt.kind,
        receipt.reference,
        receipt.daticert_msgid,
        (receipt.recipient or "").lower(),
        receipt.identificativo,
        receipt.ts,
    )
    return hashlib.sha256("\n".join(p or "" for p in parts).encode()).hexdigest()


def receipt_epoch(receipt: PecReceipt) -> float | None:
    """The receipt's own time (daticert ``<data>``) in epoch seconds, when readable."""
    if not receipt.ts:
        return None
    try:
        when = datetime.fromisoformat(receipt.ts)
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def ignored_reason(receipt: PecReceipt) -> str:
    reason = (receipt.reason or "").lower()
    if "posta-certificata" in reason:
        return "certified_mail"
    if "anomaly" in reason:
        return "anomaly"
    return "not_a_receipt"


@dataclass
class Match:
    """The message a receipt refers to, and how it was found."""

    ref: MessageRef
    by_daticert: bool


class ReceiptHandler:
    """The poller handler of one PEC account's mailbox."""

    def __init__(self, runtime: Runtime, tenant_id: str, account_id: str) -> None:
        self.rt = runtime
        self.tenant_id = tenant_id
        self.account_id = account_id
        self.tables = tables_of(runtime)
        self.metrics = runtime.local(PecMetrics)

    async def __call__(self, uid: int, raw: bytes) -> None:
        await self.handle(raw)

    async def handle(self, raw: bytes) -> str:
        """Handle one message; returns what happened (``recorded``, ``ignored``,
        ``duplicate``, ``unknown_message``, ``other_account``)."""
        receipt = parse_receipt(raw)
        where = f"pec:{self.tenant_id}:{self.account_id}"
        if not receipt.is_receipt:
            self.metrics.ignored.labels(self.tenant_id, ignored_reason(receipt)).inc()
            log.info("%s: not a receipt, left alone: %s", where, receipt.reason)
            return "ignored"
        key = receipt_key(receipt)
        if await self.tables.receipt_seen(key):
            self.metrics.duplicates.labels(self.tenant_id).inc()
            return "duplicate"
        match, outcome = await self._match(receipt)
        if match is None:
            self.metrics.unmatched.labels(self.tenant_id, outcome).inc()
            log.warning(
                "%s: %s receipt for %s changes nothing (%s)",
                where,
                receipt.kind,
                receipt.reference,
                outcome,
            )
            await self._remember(key, receipt, None, outcome)
            return outcome
        outcome = await self._record(key, receipt, match)
        await self._remember(key, receipt, match.ref.id, outcome)
        if outcome == "recorded":
            self.metrics.receipts.labels(self.tenant_id, receipt.kind or "?").inc()
        elif outcome == "duplicate":
            self.metrics.duplicates.labels(self.tenant_id).inc()
        else:  # the message went away meanwhile
            self.metrics.unmatched.labels(self.tenant_id, outcome).inc()
        return outcome

    # -- correlation ------------------------------------------------------------------------
    async def _match(self, receipt: PecReceipt) -> tuple[Match | None, str]:
        """The message of this account the receipt refers to (header first, then daticert),
        or None with why: ``unknown_message`` or ``other_account``."""
        candidates = [c for c in (receipt.reference, receipt.daticert_msgid) if c]
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            return None, "unknown_message"
        found = await self.rt.storage.find_messages_by_message_id(candidates)
        for position, message_id in enumerate(candidates):
            for ref in found:
                if ref.message_id != message_id:
                    continue
                if ref.tenant_id == self.tenant_id and ref.account_id == self.account_id:
                    return Match(ref, by_daticert=position > 0), "matched"
        return None, "other_account" if found else "unknown_message"

    # -- recording --------------------------------------------------------------------------
    async def _record(self, key: str, receipt: PecReceipt, match: Match) -> str:
        ref = match.ref
        existing = await self.rt.storage.list_events(ref.tenant_id, ref.id) or []
        pec_events = [e for e in existing if e.event_type.startswith("pec_")]
        if any((e.metadata or {}).get("pec_receipt") == key for e in pec_events):
            return "recorded"  # recorded before a crash, not yet remembered
        event_type = receipt.event or ""
        recipient = (receipt.recipient or "").lower() or None
        if _says_nothing_new(event_type, recipient, pec_events):
            return "duplicate"
        tracked = await self.tables.tracked(ref.tenant_id, ref.id)
        expected = tracked.recipients if tracked is not None else []
        if not expected:  # sent before the plugin noted it: the receipt's own list
            expected = sorted({r.lower() for r in receipt.recipients})
        now = time.time()
        ts = receipt_epoch(receipt) or now
        meta = self._metadata(key, receipt, match, ts, recipient, expected)
        if event_type == ev.ACCEPTANCE:  # before the event: the timeout check sees it
            await self.tables.set_acceptance(ref.tenant_id, ref.id, ts)
        known = _known_timestamps(pec_events, tracked)
        if event_type == ev.ACCEPTANCE and known.get("pec_acceptance_ts") is None:
            known["pec_acceptance_ts"] = ts
        if event_type == ev.DELIVERY and known.get("pec_delivery_ts") is None:
            if _delivered_to_all(recipient, pec_events, expected):
                known["pec_delivery_ts"] = ts
                await self.tables.set_delivery(ref.tenant_id, ref.id, ts)
        meta.update({k: v for k, v in known.items() if v is not None})
        recorded = await self.rt.record_events(
            [NewEvent(ref.tenant_id, ref.id, event_type, now, _describe(receipt), meta)]
        )
        return "recorded" if recorded else "unknown_message"

    def _metadata(
        self,
        key: str,
        receipt: PecReceipt,
        match: Match,
        ts: float,
        recipient: str | None,
        expected: list[str],
    ) -> dict[str, Any]:
        warnings = list(receipt.warnings)
        if match.by_daticert:
            warnings.append(
                f"matched by daticert msgid {receipt.daticert_msgid}, not by the "
                f"X-Riferimento-Message-ID header {receipt.reference}"
            )
        meta: dict[str, Any] = {
            "account_id": self.account_id,
            "pec_receipt": key,
            "pec_kind": receipt.kind,
            "pec_ts": ts,
            "receipt_time": receipt.ts,
            "recipient": recipient,
            "error": receipt.error,
            "error_code": receipt.error_code,
            "error_detail": receipt.error_detail,
            "provider": receipt.provider,
            "identificativo": receipt.identificativo,
            "receipt_message_id": receipt.message_id,
            "warnings": warnings,
        }
        if recipient is None and receipt.kind in _ALL_RECIPIENTS:
            meta["recipients"] = expected  # accepted, or refused, for every recipient
        return {k: v for k, v in meta.items() if v not in (None, "", [])}

    async def _remember(
        self, key: str, receipt: PecReceipt, msg_id: str | None, outcome: str
    ) -> None:
        await self.tables.remember_receipt(
            key,
            tenant_id=self.tenant_id,
            account_id=self.account_id,
            kind=receipt.kind,
            reference=receipt.reference,
            msg_id=msg_id,
            outcome=outcome,
        )


def _says_nothing_new(event_type: str, recipient: str | None, pec: list[EventRecord]) -> bool:
    """A second acceptance, or a second receipt of one kind for one recipient."""
    for e in pec:
        if e.event_type != event_type:
            continue
        if event_type == ev.ACCEPTANCE:
            return True
        if recipient is not None and (e.metadata or {}).get("recipient") == recipient:
            return True
    return False


def _known_timestamps(pec: list[EventRecord], tracked: TrackedMessage | None) -> dict[str, Any]:
    known: dict[str, Any] = {"pec_acceptance_ts": None, "pec_delivery_ts": None}
    if tracked is not None:
        known["pec_acceptance_ts"] = tracked.acceptance_ts
        known["pec_delivery_ts"] = tracked.delivery_ts
    for e in pec:
        meta = e.metadata or {}
        for name in known:
            if known[name] is None and meta.get(name) is not None:
                known[name] = meta[name]
    return known


def _delivered_to_all(recipient: str | None, pec: list[EventRecord], expected: list[str]) -> bool:
    delivered = {(e.metadata or {}).get("recipient") for e in pec if e.event_type == ev.DELIVERY}
    delivered.add(recipient)
    return bool(expected) and all(r in delivered for r in expected)


def _describe(receipt: PecReceipt) -> str:
    who = f" {receipt.recipient}" if receipt.recipient else ""
    error = f": {receipt.error}" if receipt.error else ""
    by = f" ({receipt.provider})" if receipt.provider else ""
    return f"PEC {receipt.kind}{who}{error}{by}"
