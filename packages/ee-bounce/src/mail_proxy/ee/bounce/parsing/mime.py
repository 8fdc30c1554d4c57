"""Low-level helpers shared by the parsers: MIME walking, text decoding, field blocks, addresses.

Bounces are written by hundreds of different programs and many are not quite valid MIME
(a boundary that never appears, a ``charset="UFT-8"``, an HTML-only notice, 8-bit text in
headers). Everything here is lenient on purpose: it never raises on bad input, it degrades
to "no text" or "no field" instead.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import Message

#: The characters of an unquoted local part (quoted local parts are not worth the trouble).
_LOCAL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~.-"
)
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}(?![A-Za-z0-9-])"
)
_VALID_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+$")
_ADDRESS_TYPE = re.compile(r"^\s*(?:rfc822|rfc-822|x-[\w-]+|unknown)\s*;\s*", re.I)

#: Leaf content types that carry the original message (never searched for recipients).
ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")
#: How much of each text part is read: notices are short, what follows is the original.
_TEXT_LIMIT = 256 * 1024
DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
FEEDBACK_TYPES = ("message/feedback-report",)


@dataclass
class Parts:
    """The leaves of a message, sorted by role.

    ``texts`` are the human-readable parts (plain text preferred over its HTML alternative),
    ``dsn`` the raw delivery-status payloads (one list of field blocks each), ``originals``
    the attached original messages or header blocks, ``feedback`` the ARF report fields.
    """

    texts: list[str] = field(default_factory=list)
    dsn: list[list[dict[str, str]]] = field(default_factory=list)
    originals: list[Message] = field(default_factory=list)
    feedback: list[dict[str, str]] = field(default_factory=list)


def load(raw: bytes) -> Message:
    """Parse raw bytes into a (compat32, lenient) message."""
    return message_from_bytes(raw, policy=policy.compat32)


def header(msg: Message, name: str) -> str:
    """A header as text: RFC 2047 words decoded, folding and surrounding space removed."""
    value = msg.get(name)
    if value is None:
        return ""
    return decode_words(str(value))


def header_all(msg: Message, name: str) -> list[str]:
    return [decode_words(str(v)) for v in (msg.get_all(name) or [])]


def decode_words(value: str) -> str:
    try:
        text = str(make_header(decode_header(value)))
    except Exception:
        text = value
    return " ".join(text.split())


def part_text(part: Message) -> str:
    """The decoded text of a non-multipart part (HTML turned into plain text)."""
    payload = part.get_payload(decode=True)
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, list):
            return ""
        payload = str(raw).encode("utf-8", "replace")
    charset = part.get_content_charset() or "utf-8"
    text = decode_bytes(payload if isinstance(payload, bytes) else b"", charset)
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    return text


def decode_bytes(data: bytes, charset: str = "utf-8") -> str:
    for candidate in (charset, "utf-8"):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


_BLOCK_TAGS = re.compile(r"<\s*(?:br|/p|p|/div|div|/tr|tr|/li|li|/h\d|/table)\b[^>]*>", re.I)
_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")


def html_to_text(text: str) -> str:
    text = _DROP.sub(" ", text)
    text = _BLOCK_TAGS.sub("\n", text)
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def collect_parts(msg: Message) -> Parts:
    """Sort the leaves of ``msg`` by role, without descending into attached originals."""
    parts = Parts()
    _walk(msg, parts, top=True)
    return parts


def _walk(part: Message, parts: Parts, top: bool = False) -> None:
    ctype = part.get_content_type()
    if ctype in ORIGINAL_TYPES and not top:
        original = _as_message(part)
        if original is not None:
            parts.originals.append(original)
        return
    if ctype in DSN_TYPES:
        parts.dsn.append(dsn_blocks(part))
        return
    if ctype in FEEDBACK_TYPES:
        for block in dsn_blocks(part):
            parts.feedback.append(block)
        return
    if part.is_multipart():
        children = [c for c in part.get_payload() if isinstance(c, Message)]
        if ctype == "multipart/alternative":
            plain = [c for c in children if c.get_content_type() == "text/plain"]
            if plain:
                children = plain + [c for c in children if c.get_content_maintype() != "text"]
        for child in children:
            if isinstance(child, Message):
                _walk(child, parts)
        return
    if part.get_content_maintype() in ("text", "multipart"):
        # a multipart whose boundary never appears arrives here as one text: read it as such
        text = part_text(part)[:_TEXT_LIMIT]
        if text.strip():
            parts.texts.append(text)


def _as_message(part: Message) -> Message | None:
    payload = part.get_payload()
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if isinstance(payload, list) and encoding in ("quoted-printable", "base64"):
        # not allowed on message/rfc822, but sent: undo the encoding and parse again
        inner = payload[0] if payload and isinstance(payload[0], Message) else None
        if inner is not None:
            data = inner.as_bytes()
            payload = decode_transfer(data, encoding)
            return load(payload)
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], Message) else None
    decoded = part.get_payload(decode=True)
    if not isinstance(decoded, bytes) or not decoded:
        return None
    return load(decoded)


def decode_transfer(data: bytes, encoding: str) -> bytes:
    """Undo a quoted-printable or base64 transfer encoding (leniently)."""
    import base64
    import quopri

    try:
        if encoding == "base64":
            return base64.b64decode(data, validate=False)
        return quopri.decodestring(data)
    except (ValueError, TypeError):
        return data


def dsn_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a delivery-status (or feedback-report) part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = []
        for sub in payload:
            if isinstance(sub, Message):
                block = {k.lower(): " ".join(str(v).split()) for k, v in sub.items()}
                # an unparsed remainder (a broken part) may still hold fields
                rest = sub.get_payload()
                if isinstance(rest, str) and ":" in rest:
                    for extra in field_blocks(rest):
                        blocks.append(extra)
                if block:
                    blocks.append(block)
        return blocks
    return field_blocks(part_text(part))


_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]{1,60})\s*:\s*(.*)$")


def field_blocks(text: str) -> list[dict[str, str]]:
    """``Name: value`` blocks separated by blank lines (folded lines joined), names lowercased.

    Lines that are neither a field nor a continuation are ignored, so the same function reads
    a clean delivery-status part and the fields quoted in the text of a broken one.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] = f"{current[last]} {line.strip()}"
            continue
        found = _FIELD.match(line)
        if found:
            last = found.group(1).lower()
            value = found.group(2).strip()
            current[last] = f"{current[last]} {value}" if last in current else value
        else:
            last = ""
    if current:
        blocks.append(current)
    return blocks


def find_emails(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, address)`` of each addr-spec in ``text``, in order.

    Found from the ``@`` signs outwards rather than with one regular expression: a
    backtracking pattern for "local@domain" is quadratic on long runs of address characters
    (a base64 blob, a long token), and bounces carry those.
    """
    found: list[tuple[int, int, str]] = []
    floor = 0
    at = text.find("@")
    while at != -1:
        start = at
        while start > floor and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        local = text[start:at]
        if ".." in local:
            cut = local.rindex("..") + 2
            start, local = start + cut, local[cut:]
        while local.startswith("."):
            start, local = start + 1, local[1:]
        domain = _DOMAIN.match(text, at + 1)
        if local and not local.endswith(".") and domain:
            found.append((start, domain.end(), text[start : domain.end()]))
            floor = domain.end()
            at = text.find("@", floor)
        else:
            floor = at + 1
            at = text.find("@", floor)
    return found


def mask_emails(text: str, mask: str = "<addr>") -> str:
    """``text`` with every address replaced by ``mask``."""
    pieces, last = [], 0
    for start, end, _address in find_emails(text):
        pieces.append(text[last:start])
        pieces.append(mask)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def normalize_address(value: str) -> str:
    """``rfc822; <Someone@Example.COM>`` → ``someone@example.com``; ``""`` when not an address."""
    text = _ADDRESS_TYPE.sub("", decode_words(value or ""))
    found = find_emails(text)
    if not found:
        return ""
    address = found[0][2].strip(".").lower()
    return address if _VALID_ADDRESS.match(address) else ""


def collapse(text: str, limit: int = 500) -> str:
    """Whitespace collapsed to single spaces, cut to ``limit`` characters."""
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
