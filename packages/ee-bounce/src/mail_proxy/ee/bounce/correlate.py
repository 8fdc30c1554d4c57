"""Which message a bounce is about, and whether it may change it.

In this order (docs/bounce.md "Correlation"):

1. **VERP token**: an address the bounce was delivered to (``Delivered-To``, ``X-Original-To``,
   ``To``, ... and the quoted ``Return-Path``) is ``local+TOKEN@domain`` of a configured return
   path: the token names the message and must verify (:func:`.verp.verify`); a token that
   does not is *forged* and the bounce stops there;
2. else the **Message-ID** the bounce quotes from the original, looked up among the
   Message-IDs the proxy sent; when the bounce also quotes ``X-Genro-Mail-ID``, the two must
   name the same message (else *forged*);
3. the message must belong to a tenant this mailbox serves (else *foreign_tenant*).

The client's id (``X-Genro-Mail-ID``) alone is never enough: anyone can write
``order-1001`` in a message.

Recipients: a failure counts for a recipient of the message (``to``/``cc``/``bcc``, or the
report's ``Original-Recipient``). A failure naming an address the message was not sent to is
attributed to the message's only recipient when it has one (a forwarded address), without
suppressing anything, and dropped otherwise: a bounce cannot put arbitrary addresses on the
suppression list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from typing import TYPE_CHECKING

from .config import BounceConfigs
from .suppression import normalize
from .verp import VerpSecret, parse_token, records_by_pk, token_in, verify

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import MessageRecord, MessageRef
    from mail_proxy.core.engine.runtime import Runtime
    from mail_proxy.ee.bounce.parsing import BounceReport, RecipientFailure

_DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")


@dataclass
class Match:
    """``status``: ``ok`` (``record`` set), ``unmatched``, ``forged`` or ``foreign_tenant``."""

    status: str
    record: MessageRecord | None = None
    matched_by: str = ""
    detail: str = ""


@dataclass
class Attributed:
    """A failure as it applies to the matched message."""

    failure: RecipientFailure
    recipient: str
    #: False when the failure named an address the message was not sent to.
    exact: bool = True
    reported_address: str = ""


@dataclass
class Correlator:
    """Matches reports read from the mailbox ``mailbox_key`` (see the module docstring), a
    batch at a time: the lookups of a whole batch are a few queries, not a few per bounce."""

    runtime: Runtime
    mailbox_key: str
    return_paths: set[str] = field(default_factory=set)

    async def match_all(self, items: list[tuple[BounceReport, Message]]) -> list[Match]:
        """One :class:`Match` per ``(report, bounce headers)``, in order."""
        tokens = [self._token(report, bounce) for report, bounce in items]
        parsed = [parse_token(t) if t else None for t in tokens]
        wanted_ids = sorted(
            {
                _bracketed(report.message_id)
                for (report, _), token in zip(items, tokens, strict=True)
                if token is None and report.message_id
            }
        )
        refs: dict[str, list[MessageRef]] = {}
        if wanted_ids:
            for ref in await self.runtime.storage.find_messages_by_message_id(wanted_ids):
                refs.setdefault(ref.message_id, []).append(ref)
        pks = {p[0] for p in parsed if p} | {r.pk for found in refs.values() for r in found}
        records = await records_by_pk(self.runtime, pks) if pks else {}
        secret = await self.runtime.local(VerpSecret).get() if any(parsed) else b""
        out = []
        for (report, _), token, pair in zip(items, tokens, parsed, strict=True):
            if token is not None:
                out.append(await self._by_token(token, pair, records, secret))
            else:
                out.append(await self._by_message_id(report, refs, records))
        return out

    async def _by_token(
        self,
        token: str,
        pair: tuple[int, str] | None,
        records: dict[int, MessageRecord],
        secret: bytes,
    ) -> Match:
        record = records.get(pair[0]) if pair else None
        if pair is None or (record is not None and not verify(secret, record, pair[1])):
            return Match("forged", detail=f"VERP token {token!r} does not verify")
        if record is None:
            return Match("unmatched", detail=f"VERP token {token!r}: message gone")
        return await self._served(record, "verp")

    async def _by_message_id(
        self,
        report: BounceReport,
        refs: dict[str, list[MessageRef]],
        records: dict[int, MessageRecord],
    ) -> Match:
        if not report.message_id:
            why = "only X-Genro-Mail-ID quoted" if report.mail_id else "no token, no Message-ID"
            return Match("unmatched", detail=why)
        message_id = _bracketed(report.message_id)
        found = refs.get(message_id, [])
        if not found:
            return Match("unmatched", detail=f"unknown Message-ID {message_id}")
        if report.mail_id:
            found = [r for r in found if r.id == report.mail_id]
            if not found:
                return Match("forged", detail="X-Genro-Mail-ID and Message-ID disagree")
        served = [r for r in found if await self._serves(r.tenant_id)]
        if not served:
            return Match("foreign_tenant", detail=f"Message-ID {message_id}")
        if len(served) > 1:
            return Match("unmatched", detail=f"Message-ID {message_id} names several messages")
        record = records.get(served[0].pk)
        if record is None:
            return Match("unmatched", detail="message removed meanwhile")
        return Match("ok", record, "message_id")

    def _token(self, report: BounceReport, bounce: Message) -> str | None:
        if not self.return_paths:
            return None
        candidates = [report.envelope_to or ""]
        for name in _DELIVERY_HEADERS:
            candidates += [str(v) for v in bounce.get_all(name) or []]
        candidates.append(report.original_headers.get("return-path", ""))
        for value in candidates:
            for address in _addresses(value):
                token = token_in(address, self.return_paths)
                if token:
                    return token
        return None

    async def _served(self, record: MessageRecord, matched_by: str) -> Match:
        if not await self._serves(record.tenant_id):
            return Match("foreign_tenant", detail=f"message of tenant {record.tenant_id!r}")
        return Match("ok", record, matched_by)

    async def _serves(self, tenant_id: str) -> bool:
        config = await self.runtime.local(BounceConfigs).effective(tenant_id)
        return config is not None and config.mailbox_key() == self.mailbox_key


def attribute(record: MessageRecord, failures: Iterable[RecipientFailure]) -> list[Attributed]:
    """The failures that apply to ``record``'s recipients (see the module docstring)."""
    from mail_proxy.core.engine.mime import addresses

    payload = record.payload or {}
    sent_to = [normalize(a) for n in ("to", "cc", "bcc") for a in addresses(payload.get(n) or [])]
    known = set(sent_to)
    found: list[Attributed] = []
    strays: list[RecipientFailure] = []
    for failure in failures:
        for candidate in (failure.address, failure.original_recipient):
            if candidate and normalize(candidate) in known:
                found.append(Attributed(failure, normalize(candidate)))
                break
        else:
            strays.append(failure)
    if strays and not found and len(known) == 1:
        only = sent_to[0]
        found += [Attributed(f, only, exact=False, reported_address=f.address) for f in strays]
    return found


def _bracketed(message_id: str) -> str:
    text = message_id.strip()
    return text if text.startswith("<") else f"<{text}>"


def _addresses(value: str) -> list[str]:
    from email.utils import getaddresses

    return [addr for _name, addr in getaddresses([value]) if "@" in addr]
