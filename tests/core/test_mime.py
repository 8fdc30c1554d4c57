"""build_email / envelope / new_message_id: what ends up in the bytes, parsed back."""

from __future__ import annotations

import hashlib
import re
from email import message_from_bytes, message_from_string
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any, cast

import pytest

from mail_proxy.core.contracts.errors import MessageContentError
from mail_proxy.core.engine.mime import (
    Attachment,
    MimeError,
    build_email,
    envelope,
    new_message_id,
)


def payload(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from": "Sender <sender@example.com>",
        "to": ["a@example.com"],
        "subject": "Hello",
        "body": "Hello world",
    }
    base.update(kw)
    return base


def roundtrip(
    p: dict[str, Any],
    attachments: list[Attachment] | None = None,
    message_id: str = "<fixed@example.com>",
    mail_id: str = "m1",
) -> tuple[bytes, EmailMessage]:
    raw = build_email(
        p, message_id=message_id, mail_id=mail_id, attachments=attachments or []
    ).as_bytes()
    parsed = cast(EmailMessage, message_from_bytes(raw, policy=email_policy.default))
    return raw, parsed


def headers_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


# -- headers -----------------------------------------------------------------------------------
def test_standard_headers() -> None:
    raw, msg = roundtrip(
        payload(cc="c@example.com", reply_to="Replies <r@example.com>"), mail_id="client-7"
    )
    assert msg["From"] == "Sender <sender@example.com>"
    assert msg["To"] == "a@example.com"
    assert msg["Cc"] == "c@example.com"
    assert msg["Reply-To"] == "Replies <r@example.com>"
    assert msg["Subject"] == "Hello"
    assert msg["Message-ID"] == "<fixed@example.com>"
    assert msg["X-Genro-Mail-ID"] == "client-7"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"].datetime.tzinfo is not None
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_message_id_gets_angle_brackets_and_is_kept_verbatim() -> None:
    _, msg = roundtrip(payload(), message_id="abc@example.com")
    assert msg["Message-ID"] == "<abc@example.com>"


def test_date_from_headers_is_kept_and_not_duplicated() -> None:
    date = "Tue, 01 Jan 2030 10:00:00 +0000"
    raw, msg = roundtrip(payload(headers={"Date": date}))
    assert msg.get_all("Date") == [date]
    assert headers_of(raw).count(b"Date:") == 1


def test_bcc_and_return_path_never_in_headers() -> None:
    raw, msg = roundtrip(payload(bcc=["hidden@example.com"], return_path="b@example.com"))
    assert b"hidden@example.com" not in raw
    assert "Bcc" not in msg
    assert "Return-Path" not in msg


def test_extra_headers_cannot_replace_structural_ones() -> None:
    raw, msg = roundtrip(
        payload(
            headers={
                "X-Campaign": "spring",
                "In-Reply-To": "<parent@example.com>",
                "Bcc": "injected@example.com",
                "From": "evil@example.com",
                "message-id": "<other@example.com>",
                "X-Genro-Mail-ID": "spoof",
                "Content-Type": "text/html",
            }
        )
    )
    assert msg["X-Campaign"] == "spring"
    assert msg["In-Reply-To"] == "<parent@example.com>"
    assert b"injected@example.com" not in raw
    assert b"evil@example.com" not in raw
    assert msg.get_all("Message-ID") == ["<fixed@example.com>"]
    assert msg.get_all("X-Genro-Mail-ID") == ["m1"]
    assert msg.get_content_type() == "text/plain"


@pytest.mark.parametrize("bad", ["a\r\nBcc: x@example.com", "a\nb", "a\rb", "a\x00b"])
@pytest.mark.parametrize(
    "where", ["subject", "header_value", "header_name", "from", "to", "filename", "mail_id"]
)
def test_cr_lf_nul_refused_everywhere(bad: str, where: str) -> None:
    p = payload()
    attachments: list[Attachment] = []
    mail_id = "m1"
    if where == "subject":
        p["subject"] = bad
    elif where == "header_value":
        p["headers"] = {"X-Test": bad}
    elif where == "header_name":
        p["headers"] = {bad: "v"}
    elif where == "from":
        p["from"] = f"{bad} <a@example.com>"
    elif where == "to":
        p["to"] = [f"x@example.com{bad}"]
    elif where == "filename":
        attachments = [Attachment(f"file{bad}.txt", b"x")]
    else:
        mail_id = bad
    with pytest.raises(MimeError) as err:
        build_email(p, message_id="<x@example.com>", mail_id=mail_id, attachments=attachments)
    assert err.value.code == "invalid_header"


#: Every character that ends a header line somewhere: C0 but TAB, DEL, NEL, LS, PS.
LINE_BREAKING = [chr(c) for c in range(0x20) if c != 0x09] + ["\x7f", "\x85", "\u2028", "\u2029"]


def _built_with(char: str, where: str) -> None:
    """Build a message with ``char`` in ``where``, bypassing the enqueue validation."""
    p = payload()
    attachments: list[Attachment] = []
    message_id, mail_id = "<x@example.com>", "m1"
    if where in ("subject", "return_path"):
        p[where] = f"a{char}b@example.com"
    elif where in ("to", "cc", "bcc"):
        p[where] = [f"Name{char}X <x@example.com>"]
    elif where == "from":
        p["from"] = f"Böss{char}Bcc: v@example.com <a@example.com>"  # the non-ASCII path
    elif where == "reply_to":
        p["reply_to"] = f"r@example.com{char}"
    elif where == "header value":
        p["headers"] = {"X-Test": f"ok{char}DKIM-Signature: forged"}
    elif where == "header name":
        p["headers"] = {f"X-A{char}B": "v"}
    elif where == "attachment filename":
        attachments = [Attachment(f"file{char}.txt", b"x")]
    elif where == "message_id":
        message_id = f"<x@example.com>{char}X: y"
    else:
        mail_id = f"m{char}1"
    build_email(p, message_id=message_id, mail_id=mail_id, attachments=attachments)


@pytest.mark.parametrize(
    "where",
    [
        "subject",
        "from",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "return_path",
        "header value",
        "header name",
        "attachment filename",
        "message_id",
        "id",
    ],
)
def test_builder_refuses_every_line_breaking_character(where: str) -> None:
    field = {"header value": "header X-Test"}.get(where, where)
    for char in LINE_BREAKING:
        with pytest.raises(MessageContentError) as err:
            _built_with(char, where)
        assert isinstance(err.value, MimeError) and err.value.code == "invalid_header"
        kind = {"\u2028": "line separator", "\u2029": "paragraph separator"}.get(
            char, "control character"
        )
        assert str(err.value) == f"{field}: {kind} U+{ord(char):04X} is not allowed"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"subject": "a \ud800 b"}, "subject"),
        ({"headers": {"X-Tag": "\udfff"}}, "header X-Tag"),
        ({"body": "text \ud83d"}, "body"),  # half an emoji
        ({"body_html": "<p>\udc00</p>"}, "body_html"),
    ],
)
def test_a_lone_surrogate_is_a_permanent_message_error(fields: dict[str, Any], field: str) -> None:
    # (the API refuses it at enqueue; a stored one fails here, not as an internal error)
    with pytest.raises(MimeError) as err:
        roundtrip(payload(**fields))
    assert str(err.value).startswith(f"{field}: lone surrogate U+")


def test_tab_and_other_unicode_are_kept_in_headers() -> None:
    subject = "Grüße\taus Köln \u00a0 \u200b 😀"
    raw, msg = roundtrip(payload(subject=subject, headers={"X-Tag": "a\tb"}))
    assert msg["Subject"] == subject and msg["X-Tag"] == "a\tb"
    assert headers_of(raw).isascii()


def test_invalid_header_name_refused() -> None:
    with pytest.raises(MimeError):
        build_email(
            payload(headers={"Bad Name": "v"}), message_id="<x@y>", mail_id="m", attachments=[]
        )


def test_non_ascii_subject_and_display_names_roundtrip() -> None:
    p = payload(
        **{
            "from": "José Müller <jose@example.com>",
            "subject": "Caffè ☕ pronto",
            "to": ["Zoë <zoe@example.com>", "b@example.com"],
        }
    )
    raw, msg = roundtrip(p)
    assert headers_of(raw).isascii()
    assert msg["Subject"] == "Caffè ☕ pronto"
    assert msg["From"].addresses[0].display_name == "José Müller"
    assert [a.addr_spec for a in msg["To"].addresses] == ["zoe@example.com", "b@example.com"]


def test_international_domains_are_a_labels_in_the_headers() -> None:
    p = payload(
        **{
            "from": "Jörg <joerg@bücher.de>",
            "to": ["user@BÜCHER.de", '"Doe, Jöhn" <"john doe"@straße.de>', "x@xn--tda.de"],
            "cc": ["用户@例子.广告"],
            "reply_to": '"A, B" <r@münchen.de>, s@example.com',
        }
    )
    msg = build_email(p, message_id="<fixed@example.com>", mail_id="m1", attachments=[])
    raw = msg.as_bytes(policy=msg.policy.clone(utf8=True))  # as an SMTPUTF8 server gets it
    parsed = cast(EmailMessage, message_from_string(raw.decode(), policy=email_policy.SMTPUTF8))
    assert parsed["From"].addresses[0].addr_spec == "joerg@xn--bcher-kva.de"
    assert parsed["From"].addresses[0].display_name == "Jörg"
    assert [a.addr_spec for a in parsed["To"].addresses] == [
        "user@xn--bcher-kva.de",
        '"john doe"@xn--strae-oqa.de',  # IDNA 2008 (IDNA 2003 would say strasse.de)
        "x@xn--tda.de",
    ]
    assert parsed["To"].addresses[1].display_name == "Doe, Jöhn"
    assert [a.addr_spec for a in parsed["Cc"].addresses] == ["用户@xn--fsqu00a.xn--4rr70v"]
    assert [a.addr_spec for a in parsed["Reply-To"].addresses] == [
        "r@xn--mnchen-3ya.de",
        "s@example.com",
    ]
    # the envelope keeps the stored form: the transport converts it
    assert envelope(p) == (
        "joerg@bücher.de",
        ["user@BÜCHER.de", '"john doe"@straße.de', "x@xn--tda.de", "用户@例子.广告"],
    )


def test_an_invalid_stored_domain_is_a_permanent_message_error() -> None:
    with pytest.raises(MessageContentError, match="to: .*not a valid internationalised"):
        build_email(payload(to=["a@😀.example"]), message_id="<x@y>", mail_id="m")


def test_message_id_domain_of_an_international_sender() -> None:
    assert new_message_id("Jörg <j@straße.de>").endswith("@xn--strae-oqa.de>")
    assert new_message_id("j@😀.example").endswith("@genro-mail-proxy.invalid>")


def test_long_headers_are_folded() -> None:
    subject = "word " * 60
    to = [f"person{i}@example.com" for i in range(20)]
    raw, msg = roundtrip(payload(subject=subject.strip(), to=to))
    assert all(len(line) <= 78 for line in headers_of(raw).split(b"\r\n"))
    assert msg["Subject"] == subject.strip()
    assert [a.addr_spec for a in msg["To"].addresses] == to


def test_to_as_comma_string() -> None:
    _, msg = roundtrip(payload(to="a@example.com, B <b@example.com>"))
    assert [a.addr_spec for a in msg["To"].addresses] == ["a@example.com", "b@example.com"]


# -- bodies ----------------------------------------------------------------------------------------
def test_plain_body() -> None:
    _, msg = roundtrip(payload(body="riga uno\nàèì"))
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().replace("\r\n", "\n") == "riga uno\nàèì\n"


def test_html_body() -> None:
    _, msg = roundtrip(payload(body="<p>ciao</p>", content_type="html"))
    assert msg.get_content_type() == "text/html"
    assert "<p>ciao</p>" in msg.get_content()


def test_body_and_body_html_make_an_alternative() -> None:
    _, msg = roundtrip(payload(body="plain", body_html="<b>rich</b>"))
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert cast(EmailMessage, parts[0]).get_content().strip() == "plain"
    assert cast(EmailMessage, parts[1]).get_content().strip() == "<b>rich</b>"


def test_no_body_is_an_empty_text_part() -> None:
    p = payload()
    del p["body"]
    _, msg = roundtrip(p)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == ""


# -- attachments -----------------------------------------------------------------------------------
def test_attachments_make_a_mixed_message_with_exact_bytes() -> None:
    binary = bytes(range(256)) * 50
    text = "id;nome\n1;Zoë\r\n".encode()
    _, msg = roundtrip(
        payload(body="b", body_html="<i>h</i>"),
        attachments=[
            Attachment("image.png", binary, "image/png"),
            Attachment("data.csv", text, "text/csv; charset=utf-8"),
        ],
    )
    assert msg.get_content_type() == "multipart/mixed"
    first = next(msg.iter_parts())
    assert first.get_content_type() == "multipart/alternative"
    atts = list(msg.iter_attachments())
    assert [a.get_content_type() for a in atts] == ["image/png", "text/csv"]
    digests = [hashlib.sha256(cast(bytes, a.get_payload(decode=True))).digest() for a in atts]
    assert digests == [hashlib.sha256(binary).digest(), hashlib.sha256(text).digest()]


def test_non_ascii_filename_uses_rfc2231_and_roundtrips() -> None:
    name = "fattura n°12 — été.pdf"
    raw, msg = roundtrip(payload(), attachments=[Attachment(name, b"%PDF-1.4", None)])
    assert b"filename*=utf-8''" in raw
    assert headers_of(raw).isascii()
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == name
    assert att.get_content_type() == "application/pdf"


@pytest.mark.parametrize(
    ("filename", "mime_type", "expected"),
    [
        ("report.pdf", None, "application/pdf"),
        ("photo.JPG", None, "image/jpeg"),
        ("notes.unknownext", None, "application/octet-stream"),
        ("noextension", None, "application/octet-stream"),
        ("report.pdf", "not a type", "application/pdf"),
        ("x.bin", "Application/X-Custom", "application/x-custom"),
        ("mail.eml", None, "application/octet-stream"),
        ("mail.eml", "message/rfc822", "application/octet-stream"),
    ],
)
def test_attachment_mime_types(filename: str, mime_type: str | None, expected: str) -> None:
    _, msg = roundtrip(payload(), attachments=[Attachment(filename, b"data", mime_type)])
    [att] = list(msg.iter_attachments())
    assert att.get_content_type() == expected
    assert att.get_payload(decode=True) == b"data"


# -- envelope and ids ----------------------------------------------------------------------
def test_envelope_sender_is_return_path_else_from_address() -> None:
    assert envelope(payload())[0] == "sender@example.com"
    assert envelope(payload(return_path="Bounces <b@bounce.example>"))[0] == "b@bounce.example"


def test_envelope_recipients_deduplicated_in_order() -> None:
    p = payload(
        to="A <a@example.com>, b@example.com",
        cc=["B@Example.com", "c@example.com"],
        bcc=["hidden@example.com", "A@EXAMPLE.COM"],
    )
    assert envelope(p)[1] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "hidden@example.com",
    ]


def test_envelope_without_cc_or_bcc() -> None:
    assert envelope(payload(to=["x@example.com"]))[1] == ["x@example.com"]


def test_new_message_id() -> None:
    first = new_message_id("Someone <someone@Mail.Example.COM>")
    assert re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{16}\.[0-9a-f]+@mail\.example\.com>", first)
    assert new_message_id("someone@mail.example.com") != first
    assert new_message_id("a@bücher.example").endswith("@xn--bcher-kva.example>")
    assert new_message_id("no address").endswith("@genro-mail-proxy.invalid>")


def test_shared_mime_headers_leave_each_message_as_built_alone() -> None:
    """The builder shares one parsed Content-Type / Content-Transfer-Encoding / MIME-Version
    per value between messages, and the policy remembers how they fold: building other
    kinds of message (alternative, mixed, 8bit, other charsets), and writing them with
    other policies, changes nothing in a message built before."""
    first = build_email(payload(), message_id="<a@example.com>", mail_id="m1")
    alone = first.as_bytes()
    build_email(payload(body_html="<p>Hi</p>"), message_id="<b@example.com>", mail_id="m2")
    build_email(
        payload(body="Grüße, ünïcödé"),
        message_id="<c@example.com>",
        mail_id="m3",
        attachments=[Attachment("a.txt", b"data", "text/plain")],
    )
    first.as_bytes(policy=first.policy.clone(utf8=True, cte_type="7bit", max_line_length=40))
    assert first.as_bytes() == alone
    again = build_email(payload(), message_id="<a@example.com>", mail_id="m1")
    date = re.compile(rb"Date: [^\r\n]*")
    assert date.sub(b"", again.as_bytes()) == date.sub(b"", alone)
    assert b'Content-Type: text/plain; charset="utf-8"\r\n' in alone
    assert b"MIME-Version: 1.0\r\n" in alone


def test_addresses_read_plain_mailboxes_as_getaddresses_does() -> None:
    """``addresses`` reads the plain forms with a regular expression and hands the rest to
    ``email.utils.getaddresses``: on any text, the answer is the library's."""
    import random
    from email.utils import getaddresses

    from mail_proxy.core.engine.mime import addresses

    fixed = [
        "a@b.com",
        "Bench <sender@example.com>",
        " x.y+z@sub.example.org ",
        "John Q. Public <jqp@x.org>",
        '"Doe, John" <j@x.org>',
        "a@x, b@y",
        "Ünï <u@x.org>",
        "a@[1.2.3.4]",
        "a..b@c.d",
        "Group: a@b, c@d;",
        "a@b.c (comment)",
        "n <a@b.c> trailing",
    ]
    rng = random.Random(20261205)
    alphabet = "ab9.-+_' <>@\"(),;:[]\\ü"
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(4000)]

    def part(chars: str) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(0, 6)))

    # near-plain mailboxes: dots, hyphens and spaces in every position, names or not
    for _ in range(4000):
        addr = f"{part('ab.-+')}@{part('cd.-')}"
        form = rng.randint(0, 2)
        fuzz.append(addr if form == 0 else f"{part('Nm. -')}<{addr}>" if form == 1 else f" {addr} ")
    for text in fixed + fuzz:
        expected = [addr for _name, addr in getaddresses([text]) if addr]
        assert addresses([text]) == expected, text
