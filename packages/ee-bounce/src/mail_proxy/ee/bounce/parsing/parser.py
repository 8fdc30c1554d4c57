"""``parse_bounce``: one returned message in, one :class:`~.model.BounceReport` out.

The steps, each in its own module:

1. sort the MIME leaves (:mod:`.mime`) and recover the original's headers (:mod:`.original`);
2. complaints (ARF/JMRP) and Amazon SES JSON notifications are recognised first
   (:mod:`.detect`, :mod:`.notifications`);
3. recipients come from the RFC 3464 report when there is one (:mod:`.dsn`), otherwise from
   the human-readable notice (:mod:`.text_formats`), otherwise from ``X-Failed-Recipients``,
   otherwise — for a message that is clearly a bounce but names nobody — from the original's
   ``To``/``Cc``; the notice's text about each recipient supplements a terse report;
4. success-only reports are ``delivered``; failures make a ``bounce`` when the message has
   bounce evidence, else auto-replies are recognised (:mod:`.detect`);
5. each failure is classified (:mod:`.classify`).

A bounce forwarded by a person (attached, or pasted in the body) is parsed as the bounce it
contains when the outer message yields nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from . import classify, detect, dsn, original
from .mime import Parts, collapse, collect_parts, header, header_all, load, normalize_address
from .model import BounceReport, Finding, RecipientFailure
from .notifications import ses_notification
from .text_formats import MAX_RECIPIENTS, find_recipients, notice_text, preamble

_ENVELOPE_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To")
_RECEIVED_FOR = re.compile(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+?)>?\s*;", re.I)
_SENDER_HEADERS = ("From", "Sender", "Reply-To", "Return-Path", "To", "Cc", *_ENVELOPE_HEADERS)
_ORIGINAL_SENDER = ("from", "sender", "reply-to", "return-path", "errors-to")
_EMBEDDED = re.compile(
    r"^(?:From MAILER-DAEMON.*|Return-Path:\s*<>\s*|Content-Type:\s*multipart/report.*)$",
    re.I | re.M,
)


def parse_bounce(raw: bytes) -> BounceReport:
    """Parse one message (raw RFC 5322 bytes) into a :class:`BounceReport`."""
    return _parse(load(raw), depth=0)


def _parse(msg: Message, depth: int) -> BounceReport:
    parts = collect_parts(msg)
    headers = original.recover(parts.originals, parts.texts)
    report = BounceReport(envelope_to=envelope_to(msg))
    notice = notice_text(parts.texts)

    if detect.is_complaint(msg, parts):
        report.kind = "complaint"
        report.recipients = _complainers(parts, headers)
        return _with_original(report, headers)

    ses = ses_notification("\n".join(parts.texts)) if parts.texts else None
    if ses is not None:
        kind, findings, ses_headers = ses
        headers = ses_headers or headers
        if kind != "bounce":
            report.kind = kind
            report.recipients = [_plain(f, kind) for f in findings]
            return _with_original(report, headers)
        findings_all = findings
        structured = True
    else:
        findings_all, structured = _findings(msg, parts, notice, headers)

    failures = [f for f in findings_all if not dsn.is_success(f)]
    if findings_all and not failures:
        report.kind = "delivered"
        report.recipients = [_plain(f, "delivered") for f in findings_all]
        return _with_original(report, headers)

    evidence = "report" if structured else detect.bounce_evidence(msg, notice)
    auto, auto_why = detect.autoreply_evidence(msg, notice)
    strong = structured or evidence in ("x-failed-recipients", "from mail system")
    if not failures and depth == 0:
        inner = _embedded(msg, parts)
        if inner is not None:
            inner.envelope_to = report.envelope_to
            return inner
    if not failures and evidence and (strong or auto < 2):
        failures = _original_recipients(headers, notice, _exclusions(msg, headers))
    if failures and (strong or (evidence and auto < 2)):
        report.is_bounce = True
        report.kind = "bounce"
        context = _Context(
            notice=notice,
            count=len(failures),
            declared=classify.notice_declares(notice),
            expired=classify.says_expired(f"{header(msg, 'Subject')}\n{notice}"),
        )
        report.recipients = [_classify(f, context) for f in failures]
    elif auto:
        report.kind = "autoreply"
        sender = normalize_address(header(msg, "From"))
        report.recipients = [RecipientFailure(address=sender, rule=auto_why)] if sender else []
    return _with_original(report, headers)


def _findings(
    msg: Message, parts: Parts, notice: str, headers: dict[str, str]
) -> tuple[list[Finding], bool]:
    """All recipients the message names, and whether they came from a structured report."""
    from_report = [f for blocks in parts.dsn for f in dsn.findings_from_blocks(blocks)]
    if not from_report:
        from_report = [f for text in parts.texts for f in dsn.findings_in_text(text)]
    report_type = str(msg.get_param("report-type") or "").lower()
    structured = bool(from_report) or report_type == "delivery-status"
    never = {normalize_address(header(msg, "From"))}
    from_text = find_recipients(notice, _exclusions(msg, headers), never)
    by_address = {f.address: f for f in from_text}
    named = [f for f in from_report if f.address]
    if named:
        for finding in named:
            match = by_address.get(finding.address) or by_address.get(finding.original_recipient)
            if match is None and len(named) == 1 and len(from_text) == 1:
                match = from_text[0]
            if match is not None:
                finding.text = match.text
        return _dedupe(named)[:MAX_RECIPIENTS], structured
    if from_text:
        if len(from_report) == 1 and len(from_text) == 1:
            lone = from_report[0]
            from_text[0].action, from_text[0].status = lone.action, lone.status
            from_text[0].diagnostic = lone.diagnostic
        return from_text, structured
    failed = [
        normalize_address(v) for v in ",".join(header_all(msg, "X-Failed-Recipients")).split(",")
    ]
    failed = [a for a in failed if a]
    if failed:
        return [
            Finding(address=a, source="header", text=notice) for a in dict.fromkeys(failed)
        ], True
    return [], structured


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: dict[str, Finding] = {}
    for finding in findings:
        kept = seen.get(finding.address)
        if kept is None or (not kept.diagnostic and finding.diagnostic):
            seen[finding.address] = finding
    return list(seen.values())


def _exclusions(msg: Message, headers: dict[str, str]) -> set[str]:
    """Addresses that belong to the sender side of the exchange, never failed recipients."""
    found = set()
    for name in _SENDER_HEADERS:
        for value in header_all(msg, name):
            for part in value.split(","):
                address = normalize_address(part)
                if address:
                    found.add(address)
    for name in _ORIGINAL_SENDER:
        address = normalize_address(headers.get(name, ""))
        if address:
            found.add(address)
    return found


def _original_recipients(headers: dict[str, str], notice: str, exclude: set[str]) -> list[Finding]:
    """The original's recipients, for a bounce that does not name the failed one."""
    candidates = []
    for name in ("to", "cc"):
        for part in headers.get(name, "").split(","):
            candidates.append(normalize_address(part))
    if not any(candidates):
        candidates += [
            normalize_address(m) for m in _RECEIVED_FOR.findall(headers.get("received", ""))
        ]
    addresses = [a for a in dict.fromkeys(candidates) if a and a not in exclude]
    return [Finding(address=a, source="original", text=notice) for a in addresses]


def _embedded(msg: Message, parts: Parts) -> BounceReport | None:
    """A bounce forwarded inside this message (attached, or pasted into the text)."""
    for attached in parts.originals:
        inner = _parse(attached, depth=1)
        if inner.is_bounce:
            return inner
    for text in parts.texts:
        found = _EMBEDDED.search(text)
        if found:
            embedded = text[found.start() :]
            if embedded.startswith("From "):  # an mbox separator, not a header
                embedded = embedded.split("\n", 1)[-1]
            inner = _parse(load(embedded.encode("utf-8", "replace")), depth=1)
            if inner.is_bounce:
                return inner
    return None


@dataclass
class _Context:
    """What the classification of every recipient of one report shares (computed once)."""

    notice: str
    count: int
    declared: str
    expired: bool


def _classify(finding: Finding, context: _Context) -> RecipientFailure:
    count = context.count
    # the reason, when written before the address, is just before it
    before = preamble(context.notice, finding.address)[-3000:] if count == 1 else ""
    status = classify.pick_status(finding.status, finding.diagnostic, finding.text, before)
    smtp = classify.smtp_code(finding.diagnostic) or classify.smtp_code(finding.text)
    if not smtp and count == 1:
        smtp = classify.smtp_code(before)
    texts = [("diagnostic", finding.diagnostic), ("diagnostic", finding.text)]
    if count == 1:
        texts.append(("notice", before))
    reason, rule = classify.reason_for(status, smtp, texts)
    reason, rule = classify.settle_expiry(reason, rule, finding.action, context.expired)
    kind, why = classify.type_for(status, smtp, finding.action, context.declared, reason)
    if not rule.startswith(why):
        rule = f"{rule}; {kind}: {why}"
    return RecipientFailure(
        address=finding.address,
        status=status,
        smtp_code=smtp,
        type=kind,
        reason=reason,
        diagnostic=_diagnostic(finding, before),
        rule=rule,
        original_recipient=(
            finding.original_recipient if finding.original_recipient != finding.address else ""
        ),
    )


def _diagnostic(finding: Finding, before: str) -> str:
    """The text to show: the first of report diagnostic, recipient text, notice preamble that
    says something recognisable (a code or a known phrase), trimmed around the reply."""
    candidates = [t for t in (finding.diagnostic, finding.text, before) if t and t.strip()]
    for text in candidates:
        if classify.smtp_code(text) or dsn.status_code(text) or classify.match_text(text):
            return _focus(text)
    return _focus(candidates[0]) if candidates else ""


_REPLY = re.compile(r"(?<![\w.])[45]\d\d[ -]+[45]\.\d{1,3}\.\d{1,3}")
_CODE = re.compile(r"(?<![\w.])[45]\d\d[ -]|(?<![\d.])[45]\.\d{1,3}\.\d{1,3}")


def _focus(text: str, limit: int = 500) -> str:
    """Whitespace collapsed; a text too long to show whole starts a little before what
    matters: a full reply (``550 5.1.1``), else the phrase that decided, else any code."""
    flat = collapse(text, limit=100_000).strip(" .,;:>)]-=*_#")
    if len(flat) > limit:
        anchors = [m.start() for m in (_REPLY.search(flat), _CODE.search(flat)) if m]
        located = classify.locate(flat)
        if located:
            anchors.insert(1, located[2])
        if anchors and anchors[0] > limit // 3:
            flat = "…" + flat[max(0, anchors[0] - 80) :]
    return collapse(flat, limit)


def _plain(finding: Finding, kind: str) -> RecipientFailure:
    return RecipientFailure(
        address=finding.address, status=finding.status, rule=f"{finding.source} {kind}"
    )


def _complainers(parts: Parts, headers: dict[str, str]) -> list[RecipientFailure]:
    found = []
    kinds = [b["feedback-type"].lower() for b in parts.feedback if b.get("feedback-type")]
    rule = f"feedback report ({kinds[0]})" if kinds else "feedback report"
    for block in parts.feedback:
        for name in ("original-rcpt-to", "removal-recipient"):
            address = normalize_address(block.get(name, ""))
            if address:
                found.append(address)
    for attached in parts.originals:
        address = normalize_address(str(attached.get("X-HmXmrOriginalRecipient", "")))
        if address:
            found.append(address)
    if not found:
        found = [normalize_address(p) for p in headers.get("to", "").split(",")]
    return [RecipientFailure(address=a, rule=rule) for a in dict.fromkeys(found) if a]


def _with_original(report: BounceReport, headers: dict[str, str]) -> BounceReport:
    report.original_headers = headers
    report.message_id = original.message_id(headers)
    report.mail_id = original.mail_id(headers)
    return report


def envelope_to(msg: Message) -> str | None:
    """The address the bounce itself was delivered to (where a VERP address is read)."""
    for name in _ENVELOPE_HEADERS:
        address = normalize_address(header(msg, name))
        if address:
            return address
    received = header(msg, "Received")
    found = _RECEIVED_FOR.search(received)
    if found:
        address = normalize_address(found.group(1))
        if address:
            return address
    return normalize_address(header(msg, "To")) or None
