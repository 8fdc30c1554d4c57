"""Structured delivery status notifications (RFC 3464).

A DSN is a ``multipart/report; report-type=delivery-status`` whose ``message/delivery-status``
part holds one per-message field block and one block per recipient (``Final-Recipient``,
``Original-Recipient``, ``Action``, ``Status``, ``Diagnostic-Code``, ``Remote-MTA``...).
This module turns those blocks into :class:`~.model.Finding` records. The same blocks are
also looked for in plain text, because some servers quote them in the human-readable part
(Amazon WorkMail's "Technical report"), send a report whose MIME boundary is broken, or the
report arrives forwarded with ``>`` quoting.
"""

from __future__ import annotations

import re

from .mime import field_blocks, normalize_address
from .model import Finding

#: Actions that mean the message reached (or was handed on towards) the recipient.
SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_DIAG_TYPE = re.compile(r"^\s*(?:smtp|x-[\w.-]+|unknown|x400|dns)\s*;\s*", re.I)


def status_code(text: str) -> str:
    """The first RFC 3463 enhanced status code in ``text`` (``"5.1.1"``), or ``""``."""
    found = _STATUS.search(text or "")
    if not found:
        return ""
    return ".".join(str(int(group)) for group in found.groups())


def findings_from_blocks(blocks: list[dict[str, str]]) -> list[Finding]:
    """One finding per recipient block; per-message blocks are skipped."""
    found: list[Finding] = []
    for block in blocks:
        final = block.get("final-recipient", "")
        original = block.get("original-recipient", "")
        if not final and not original:
            continue
        address = normalize_address(final) or normalize_address(original)
        if not address:
            address = normalize_address(block.get("x-actual-recipient", ""))
        action = (block.get("action", "").split() or [""])[0].lower()
        found.append(
            Finding(
                address=address,
                source="dsn",
                action=action,
                status=status_code(block.get("status", "")),
                diagnostic=_DIAG_TYPE.sub("", block.get("diagnostic-code", "")).strip(),
                original_recipient=normalize_address(original),
            )
        )
    return found


def findings_in_text(text: str) -> list[Finding]:
    """DSN recipient blocks quoted inside human-readable text (also ``>``-quoted ones)."""
    found = _blocks_in(text)
    if not found:
        unquoted = unquote(text)
        if unquoted != text:
            found = _blocks_in(unquoted)
    return found


def _blocks_in(text: str) -> list[Finding]:
    if not re.search(r"^\s*(?:final|original)-recipient\s*:", text, re.I | re.M):
        return []
    blocks = [
        b
        for b in field_blocks(text)
        if ("final-recipient" in b or "original-recipient" in b)
        and ("action" in b or "status" in b or "diagnostic-code" in b)
    ]
    return findings_from_blocks(blocks)


def unquote(text: str) -> str:
    """Remove one level of ``>`` quoting when most lines carry it (a forwarded bounce)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return text
    quoted = sum(1 for line in lines if line.lstrip().startswith(">"))
    if quoted < 0.6 * len(lines):
        return text
    return "\n".join(re.sub(r"^\s*> ?", "", line) for line in text.splitlines())


def is_success(finding: Finding) -> bool:
    """A recipient the report says was delivered (or relayed/expanded)."""
    if finding.action in SUCCESS_ACTIONS:
        return True
    return not finding.action and finding.status.startswith("2.")
