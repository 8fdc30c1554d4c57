"""RFC 5322 files (``.eml``) → the ``Message`` objects of ``POST /commands/add-messages``.

Parsed with the standard library (``email.policy.default``): From/To/Cc/Bcc/Reply-To,
Subject, the text and HTML bodies, other headers (``headers``), and every attachment sent
inline as ``fetch_mode: base64``. Trace headers a mail server adds on receipt (Received,
Return-Path, Delivered-To) and the MIME structure headers are not copied: the proxy builds
its own MIME message.
"""

from __future__ import annotations

import base64
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any, cast

#: Headers mapped to message fields or rebuilt by the proxy, never copied into ``headers``.
NOT_COPIED = {
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "return-path",
    "received",
    "delivered-to",
    "x-original-to",
}


class EmlError(ValueError):
    """The file cannot become a message (no sender, no recipient, unreadable)."""


def message_from_eml(raw: bytes) -> dict[str, Any]:
    """Convert one RFC 5322 message; raises :class:`EmlError` when it cannot be sent."""
    msg = cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(raw))
    sender = addresses(msg, "from")
    if not sender:
        raise EmlError("no From header")
    out: dict[str, Any] = {"from": sender[0], "to": addresses(msg, "to")}
    if not out["to"]:
        raise EmlError("no To header")
    for name in ("cc", "bcc"):
        if found := addresses(msg, name):
            out[name] = found
    if reply_to := addresses(msg, "reply-to"):
        out["reply_to"] = reply_to[0]
    out["subject"] = str(msg.get("subject", ""))
    if msg_id := str(msg.get("message-id", "")).strip():
        out["message_id"] = msg_id
    out.update(bodies(msg))
    extra = {}
    for name, value in msg.items():
        low = name.lower()
        if low not in NOT_COPIED and not low.startswith("content-") and name not in extra:
            extra[name] = str(value)
    if extra:
        out["headers"] = extra
    if files := attachments(msg):
        out["attachments"] = files
    return out


def addresses(msg: EmailMessage, header: str) -> list[str]:
    values = [str(v) for v in msg.get_all(header, [])]
    return [_format(name, addr) for name, addr in getaddresses(values) if addr]


def _format(name: str, addr: str) -> str:
    """``Name <addr>`` keeping a Unicode name readable (quoted when RFC 5322 needs it)."""
    if not name:
        return addr
    try:
        return str(Address(display_name=name, addr_spec=addr))
    except (ValueError, IndexError, TypeError):
        return addr


def bodies(msg: EmailMessage) -> dict[str, Any]:
    """``body`` (+ ``body_html`` for multipart/alternative, or ``content_type: html``)."""
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    text = _text(plain) if plain is not None else None
    markup = _text(html) if html is not None else None
    if text is not None and markup is not None:
        return {"body": text, "body_html": markup}
    if markup is not None:
        return {"body": markup, "content_type": "html"}
    return {"body": text or ""}


def attachments(msg: EmailMessage) -> list[dict[str, Any]]:
    out = []
    for index, part in enumerate(msg.iter_attachments(), start=1):
        if part.get_content_maintype() == "message":
            inner = part.get_payload(0)
            data = inner.as_bytes() if hasattr(inner, "as_bytes") else b""
        else:
            data = part.get_payload(decode=True) or b""
        out.append(
            {
                "filename": part.get_filename() or f"attachment-{index}",
                "storage_path": base64.b64encode(data).decode("ascii"),
                "fetch_mode": "base64",
                "mime_type": part.get_content_type(),
            }
        )
    return out


def message_id_to_id(message_id: str) -> str:
    """A client id derived from a Message-ID (``<abc@host>`` → ``abc@host``)."""
    return message_id.strip().strip("<>").strip()


def _text(part: Any) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError):  # unknown charset: keep what can be read
        data = part.get_payload(decode=True) or b""
        return data.decode("utf-8", errors="replace")
