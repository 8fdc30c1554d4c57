"""Recovering the headers of the original (bounced) message.

The caller needs them to find which message bounced: the original ``Message-ID`` (the
engine sets it once per message) and ``X-Genro-Mail-ID`` (the client's id). A bounce quotes
the original in one of three ways, tried in this order:

1. an attached ``message/rfc822`` part (the whole message) — RFC 3464 and most MTAs;
2. a ``text/rfc822-headers`` part (headers only) — Sendmail, OpenSMTPD, Amazon SES;
3. headers quoted in the body text, after a line like ``--- Below this line is a copy of the
   message.`` or indented in the notice (qmail, Exim, Gmail, Exchange, Sun Messaging
   Server's "This report relates to a message you sent with the following header fields").

In text, a header block is a run of ``Name: value`` lines (with folded continuations); the
block chosen is the first one that carries a ``Message-ID`` or ``X-Genro-Mail-ID``, so the
notice's own prose and the bounce's headers are never mistaken for the original's.
"""

from __future__ import annotations

import re
from email.message import Message

from .mime import decode_words
from .text_formats import cut_original

MAIL_ID_HEADER = "x-genro-mail-id"
_HEADER_LINE = re.compile(r"^[ \t]{0,6}([A-Za-z][A-Za-z0-9-]{1,60})[ \t]*:[ \t]?(.*)$")
_KEY_HEADERS = ("message-id", MAIL_ID_HEADER)
_USUAL = {"from", "to", "cc", "subject", "date", "received", "return-path", "mime-version"}
_MSGID = re.compile(r"<([^<>\s]+@[^<>\s]+)>|([^<>\s]+@[^<>\s]+)")


def headers_of(msg: Message) -> dict[str, str]:
    """The headers of a parsed message, names lowercased, first occurrence kept."""
    found: dict[str, str] = {}
    for name, value in msg.items():
        key = name.lower()
        if key not in found:
            found[key] = decode_words(str(value))
    return found


def headers_in_text(text: str) -> dict[str, str]:
    """The first header block in ``text`` with a Message-ID or X-Genro-Mail-ID, else the
    first that looks like a message header (three usual fields or more), else ``{}``."""
    blocks = _blocks(text)
    for block in blocks:
        if any(key in block for key in _KEY_HEADERS):
            return block
    for block in blocks:
        if len(_USUAL.intersection(block)) >= 3:
            return block
    return {}


def _blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    indent = 0
    for line in text.splitlines():
        stripped = line.lstrip(">").rstrip() if line.startswith(">") else line.rstrip()
        match = _HEADER_LINE.match(stripped)
        this_indent = len(stripped) - len(stripped.lstrip())
        if match and (not current or this_indent <= indent):
            key = match.group(1).lower()
            if not current:
                indent = this_indent
            if key not in current:
                current[key] = match.group(2).strip()
            last = key
            continue
        if current and last and stripped[:1] in (" ", "\t") and stripped.strip():
            current[last] = f"{current[last]} {stripped.strip()}"
            continue
        if current:
            blocks.append({k: decode_words(v) for k, v in current.items()})
        current, last = {}, ""
    if current:
        blocks.append({k: decode_words(v) for k, v in current.items()})
    return blocks


def recover(originals: list[Message], texts: list[str]) -> dict[str, str]:
    """The original's headers from the attached parts, else from the body text."""
    for original in originals:
        found = headers_of(original)
        if not any(key in found for key in _KEY_HEADERS):
            # a header folded without indentation ends the parsed header early: read the
            # attached message as text too, and keep what that finds
            try:
                quoted = headers_in_text(original.as_string())
            except Exception:
                quoted = {}
            if any(key in quoted for key in _KEY_HEADERS):
                found = {**quoted, **found}
        if any(key in found for key in _KEY_HEADERS) or len(found) > 2:
            return found
    # the original is quoted after the notice: look there first, then anywhere
    for text in texts:
        found = headers_in_text(text[len(cut_original(text)) :])
        if found:
            return found
    for text in texts:
        found = headers_in_text(text)
        if found:
            return found
    return {}


def message_id(headers: dict[str, str]) -> str | None:
    """The Message-ID in its usual ``<id@host>`` form, or ``None``."""
    value = headers.get("message-id", "")
    found = _MSGID.search(value)
    if not found:
        return None
    return f"<{found.group(1) or found.group(2)}>"


def mail_id(headers: dict[str, str]) -> str | None:
    value = headers.get(MAIL_ID_HEADER, "").strip()
    return value or None
