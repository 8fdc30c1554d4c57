"""A message as the bytes of an SMTP ``DATA`` phase, produced in pieces.

Flattening a message with a 20 MB attachment the usual way holds the attachment many times at
once: its base64 text in the MIME tree, the generator's line list and output buffer, the
flattened bytes, and the SMTP client's line-ending and dot-stuffing passes over all of it.
:func:`data_pieces` flattens only the *skeleton*: every large base64 payload is swapped for a
short marker while the stdlib generator runs (then put back), so the generator output is small;
at send time the payloads are encoded slice by slice between the skeleton's pieces. What goes
on the wire is byte for byte what the stdlib generator plus an SMTP client would send (line
ends as CRLF, a leading ``.`` doubled), and the extra memory per message is one slice.

A payload is streamed only when that transformation is trivially exact: base64 encoded,
ASCII, no CR and no ``.`` (true of any base64 text). Anything else stays in the skeleton.
"""

from __future__ import annotations

import copy
import io
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from typing import cast

#: A base64 payload at least this long (characters) is streamed rather than flattened.
STREAM_MIN_CHARS = 64 * 1024
#: Characters of a streamed payload encoded per piece sent (about 1 MB on the wire).
SLICE_CHARS = 1 << 20

_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass
class DataPieces:
    """The ``DATA`` content of one message: ``pieces`` alternate wire-ready bytes and large
    base64 payloads (LF line ends); ``size`` is the exact octet count on the wire (RFC 1870
    ``SIZE``), not counting the final ``.`` line."""

    pieces: list[bytes | str]
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The wire bytes, in order, at most about :data:`SLICE_CHARS` per chunk."""
        for piece in self.pieces:
            if isinstance(piece, bytes):
                if piece:
                    yield piece
                continue
            for start in range(0, len(piece), SLICE_CHARS):
                yield piece[start : start + SLICE_CHARS].encode("ascii").replace(b"\n", b"\r\n")


def data_pieces(message: EmailMessage, *, utf8: bool = False, cte_type: str = "8bit") -> DataPieces:
    """Flatten ``message`` for ``DATA`` the way an SMTP client would (policy ``SMTP`` or, with
    ``utf8``, ``SMTPUTF8``; ``cte_type="7bit"`` for servers without ``8BITMIME``; no ``Bcc``
    or ``Resent-Bcc`` header), keeping large base64 payloads out of the flattened bytes.

    The message is modified while the generator runs (payloads swapped for markers) and
    restored before returning; nothing else may use it meanwhile (this function does not
    yield to the event loop).
    """
    message = without_bcc(message)
    policy = cast(EmailPolicy, message.policy).clone(linesep="\r\n", utf8=utf8, cte_type=cte_type)
    streamed: list[tuple[Message, str, bytes]] = []
    try:
        for part in message.walk():
            payload = _streamable_payload(part)
            if payload is not None:
                # random, so that no message content can contain it (drawn only when needed)
                marker = f"GMP{secrets.token_hex(12)}X"
                streamed.append((part, payload, marker.encode("ascii")))
                part.set_payload(marker)
        out = io.BytesIO()
        BytesGenerator(out, policy=policy).flatten(message)
        flat = out.getvalue()
    finally:
        for swapped, original, _marker in streamed:
            swapped.set_payload(original)

    pieces: list[bytes | str] = []
    size = 0
    rest = flat
    at_line_start = True
    for _part, payload, marker_bytes in streamed:
        head, found, rest = rest.partition(marker_bytes)
        if not found:  # cannot happen with the stdlib generator; refuse rather than corrupt
            raise RuntimeError("streamed payload marker missing from the flattened message")
        pieces.append(_wire_bytes(head, at_line_start))
        pieces.append(payload)
        size += len(pieces[-2]) + len(payload) + payload.count("\n")
        at_line_start = payload.endswith("\n")
    tail = _wire_bytes(rest, at_line_start)
    # like any SMTP client: the content ends with a line end before the final "."
    ends_with_line_end = tail.endswith(b"\r\n") if tail else bool(streamed) and at_line_start
    if not ends_with_line_end:
        tail += b"\r\n"
    pieces.append(tail)
    size += len(tail)
    return DataPieces(pieces, size)


def without_bcc(message: EmailMessage) -> EmailMessage:
    """``message`` without ``Bcc``/``Resent-Bcc`` headers (a shallow copy: the original keeps
    them; the copy's header list is replaced, not mutated), or ``message`` itself if it has
    none."""
    if "bcc" not in message and "resent-bcc" not in message:
        return message
    clone = copy.copy(message)
    del clone["Bcc"]
    del clone["Resent-Bcc"]
    return clone


def _streamable_payload(part: Message) -> str | None:
    """The payload of ``part`` if it is a large base64 text that can be streamed as is."""
    if part.is_multipart():
        return None
    # ``get_payload()`` would encode the whole text once just to look for surrogates; the
    # attribute is the stored text itself.
    payload = getattr(part, "_payload", None)
    if not isinstance(payload, str) or len(payload) < STREAM_MIN_CHARS:
        return None
    if str(part.get("content-transfer-encoding", "")).strip().lower() != "base64":
        return None
    if not payload.isascii() or "\r" in payload or "." in payload:
        return None
    return payload


def _wire_bytes(segment: bytes, at_line_start: bool) -> bytes:
    """``segment`` with CRLF line ends and each line's leading ``.`` doubled (RFC 5321 4.5.2).

    ``at_line_start`` is False when the segment continues a line begun by a streamed payload:
    its first characters are then not the start of a line.
    """
    crlf = segment.count(b"\r\n")
    if segment.count(b"\n") != crlf or segment.count(b"\r") != crlf:  # a bare CR or LF
        segment = _LINE_ENDS.sub(b"\r\n", segment)
    if b"\n." not in segment and not segment.startswith(b"."):
        return segment  # no line starts with a dot (the usual case): nothing to double
    if at_line_start:
        return _LEADING_DOT.sub(b"..", segment)
    first_end = segment.find(b"\n") + 1
    if first_end == 0:
        return segment
    return segment[:first_end] + _LEADING_DOT.sub(b"..", segment[first_end:])
