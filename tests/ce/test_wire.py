"""``ce.transport.wire``: the streamed DATA content equals what aiosmtplib would send, byte for byte."""

from __future__ import annotations

import os
import re
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtplib.email import flatten_message
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mail_proxy.ce.transport import wire
from mail_proxy.core.engine.mime import Attachment, base64_text, build_email

BIG = os.urandom(300_000)  # base64 text of ~400,000 characters: streamed
MEDIUM = os.urandom(60_000)  # ~81,000 characters: streamed
SMALL = b"tiny"  # stays in the skeleton


def reference(message: EmailMessage, **kw: Any) -> bytes:
    """What aiosmtplib's send_message puts after DATA (without the final '.' line)."""
    flat = flatten_message(message, **kw)
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(flat))


def message(attachments: list[Attachment], **fields: Any) -> EmailMessage:
    payload = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "body": "x"}
    payload.update(fields)
    return build_email(payload, message_id="<1@example.com>", mail_id="m1", attachments=attachments)


CASES = {
    "no attachment": message([]),
    "dots and 8bit text": message(
        [], body=".first\n..second\nà la ligne\n.", body_html="<p>\n.dot</p>"
    ),
    "large, small and medium attachments": message(
        [
            Attachment("big.pdf", BIG),
            Attachment("small.txt", SMALL),
            Attachment("réport ü.bin", MEDIUM),
        ],
        body="line\n.leading dot after the text\n",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(
    "options", [{}, {"cte_type": "7bit"}, {"utf8": True}], ids=["8bit", "7bit", "utf8"]
)
def test_chunks_equal_the_flattened_message(name: str, options: dict[str, Any]) -> None:
    msg = CASES[name]
    before = msg.as_bytes()
    data = wire.data_pieces(msg, **options)
    sent = b"".join(data.chunks())
    assert sent == reference(msg, **options)
    assert data.size == len(sent)
    assert msg.as_bytes() == before  # the payloads were put back


def test_large_payloads_are_not_copied_into_the_flattened_bytes() -> None:
    msg = CASES["large, small and medium attachments"]
    data = wire.data_pieces(msg)
    streamed = [piece for piece in data.pieces if isinstance(piece, str)]
    payloads = [part.get_payload() for part in msg.iter_attachments()]
    # the pieces ARE the payload strings of the MIME tree (no copy), the small one is inline
    assert len(streamed) == 2
    assert streamed[0] is payloads[0] and streamed[1] is payloads[2]
    skeleton = sum(len(piece) for piece in data.pieces if isinstance(piece, bytes))
    assert skeleton < 4_000
    assert max(len(chunk) for chunk in data.chunks()) <= wire.SLICE_CHARS * 77 // 76 + 1


def test_single_part_message_whose_body_is_streamed() -> None:
    for text in (base64_text(BIG), base64_text(BIG).rstrip("\n")):  # with and without final LF
        msg = EmailMessage()
        msg["From"] = "a@example.com"
        msg["Subject"] = "raw body"
        msg["Content-Type"] = "application/octet-stream"
        msg["Content-Transfer-Encoding"] = "base64"
        msg.set_payload(text)
        data = wire.data_pieces(msg)
        assert any(isinstance(piece, str) for piece in data.pieces)
        sent = b"".join(data.chunks())
        assert sent == reference(msg)
        assert sent.endswith(b"\r\n") and data.size == len(sent)


def test_payload_that_is_not_plain_base64_stays_in_the_skeleton() -> None:
    msg = message([Attachment("big.bin", BIG)])
    [part] = msg.iter_attachments()
    odd = (
        ".not base64 but long\r\n" * 5_000
    )  # a leading dot and CRLF: must go through the generator
    part.set_payload(odd)
    data = wire.data_pieces(msg)
    assert not any(isinstance(piece, str) for piece in data.pieces)
    assert b"".join(data.chunks()) == reference(msg)


def test_bcc_headers_are_left_out_without_touching_the_message() -> None:
    msg = message([Attachment("big.pdf", BIG)])
    msg["Bcc"] = "hidden@example.com"
    msg.as_bytes()  # fixes the multipart boundary, which each flattening of a copy would draw
    sent = b"".join(wire.data_pieces(msg).chunks())
    assert b"hidden@example.com" not in sent
    assert msg["Bcc"] == "hidden@example.com"
    assert sent == reference(msg)


@pytest.mark.parametrize(
    "segment",
    [
        b"plain\r\ntext\r\n",
        b".starts with a dot\r\nthen\r\n",
        b"mid\r\n.dot line\r\n..two\r\n",
        b"bare lf\nand bare cr\rand crlf\r\n.dot after lf\n",
        b"no line end at all",
        b".",
        b"",
        b"\r\r\n\n.",
    ],
)
@pytest.mark.parametrize("at_line_start", [True, False])
def test_wire_bytes_matches_the_regex_rules(segment: bytes, at_line_start: bool) -> None:
    """The fast paths (only CRLF line ends; no line starting with a dot) give what the two
    substitutions give: CRLF everywhere, every line's leading dot doubled except the first
    line's when the segment continues a line."""
    normal = re.sub(rb"\r\n|\n|\r", b"\r\n", segment)
    if at_line_start:
        expected = PERIOD_REGEX.sub(b"..", normal)
    else:
        cut = normal.find(b"\n") + 1
        expected = normal if cut == 0 else normal[:cut] + PERIOD_REGEX.sub(b"..", normal[cut:])
    assert wire._wire_bytes(segment, at_line_start) == expected
