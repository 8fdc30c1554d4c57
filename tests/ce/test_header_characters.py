"""Characters that end a header line never reach the SMTP server (issue 16, defects 1 and 2).

CR and LF are not the only line ends: the stdlib email package refolds a header at VT, FF,
U+001C-U+001E, U+0085, U+2028 and U+2029 too, so each of them in any header field could forge
a header line. Every one of them, in every field, is refused at enqueue through the real API;
allowed Unicode arrives at a real SMTP server without any extra header line; a message that
reached the queue another way fails for good at its first attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any, cast

import pytest

from mail_proxy.core.contracts.model import NewMessage
from mail_proxy.core.testing.smtp import SmtpTestServer
from mail_proxy.core.web.app import RUNTIME
from support.api import add_account, enqueue, message, wait_status
from support.ce_api import Api
from support.ce_api import message as api_message

#: Every character that must be refused: C0 controls but TAB, DEL, NEL, LS, PS.
LINE_BREAKING = [chr(c) for c in range(0x20) if c != 0x09] + ["\x7f", "\x85", "\u2028", "\u2029"]


def described(char: str) -> str:
    """How a rejection reason names ``char``."""
    kind = {"\u2028": "line separator", "\u2029": "paragraph separator"}.get(
        char, "control character"
    )
    return f"{kind} U+{ord(char):04X}"


#: field → (entry fields carrying the character ``c``, the field as the reason names it)
FIELDS: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "id": (lambda c: {"id": f"m{c}x"}, "id"),
    "from display name": (
        lambda c: {"from": f'"Boss{c}Bcc: victim@example.org" <boss@example.com>'},
        "from",
    ),
    "from address": (lambda c: {"from": f"boss@example.com{c}"}, "from"),
    "to list": (lambda c: {"to": [f"Name{c}X-Evil: 1 <rcpt@example.org>"]}, "to"),
    "to string": (lambda c: {"to": f"rcpt@example.org{c}Bcc: victim@example.org"}, "to"),
    "cc": (lambda c: {"cc": [f"cc@example.org{c}"]}, "cc"),
    "bcc": (lambda c: {"bcc": [f"Hidden{c} <bcc@example.org>"]}, "bcc"),
    "reply_to": (lambda c: {"reply_to": f"r@example.org{c}Bcc: victim@example.org"}, "reply_to"),
    "return_path": (lambda c: {"return_path": f"b@example.org{c}"}, "return_path"),
    "subject": (lambda c: {"subject": f"Hi{c}Bcc: victim@example.org"}, "subject"),
    "message_id": (lambda c: {"message_id": f"<a@example.com>{c}X: y"}, "message_id"),
    "batch_code": (lambda c: {"batch_code": f"x{c}y"}, "batch_code"),
    "header name": (lambda c: {"headers": {f"X-A{c}B": "v"}}, "header name"),
    "header value": (
        lambda c: {"headers": {"X-Tag": f"ok{c}DKIM-Signature: forged"}},
        "header X-Tag",
    ),
    "attachment filename": (
        lambda c: {"attachments": [{"filename": f"a{c}.txt", "storage_path": "base64:aGk="}]},
        "attachment 1: filename",
    ),
}


@pytest.fixture
async def api(api: Api) -> Api:
    """The shared ``api`` (tests/conftest.py) with a default account ``main``."""
    await api.add_account("main")
    return api


@pytest.mark.parametrize("field", list(FIELDS))
async def test_every_line_breaking_character_is_refused_in_every_field(
    api: Api, field: str
) -> None:
    build, named = FIELDS[field]
    entries = []
    for n, char in enumerate(LINE_BREAKING):
        entry = api_message(f"{field.replace(' ', '-')}-{n}", **build(char))
        entries.append(entry)
    answer = await api.send(*entries)
    assert answer["queued"] == 0 and answer["ok"] is False
    got = [r["reason"] for r in answer["rejected"]]
    assert got == [f"{named}: {described(c)} is not allowed" for c in LINE_BREAKING]
    assert await api.message_ids() == []


async def test_tab_is_allowed_where_a_header_may_hold_it(api: Api) -> None:
    answer = await api.send(
        api_message("tab", subject="a\tb", headers={"X-Tag": "c\td"}),
        api_message("tab-id\t"),
        api_message("tab-batch", batch_code="x\ty"),
    )
    assert answer["queued"] == 1
    assert [r["reason"] for r in answer["rejected"]] == [
        "id: control character U+0009 is not allowed",
        "batch_code: control character U+0009 is not allowed",
    ]


# -- what a real SMTP server receives ---------------------------------------------------------
@pytest.fixture
async def smtp() -> Any:
    async with SmtpTestServer() as server:
        yield server


def _header_lines(raw: bytes) -> list[bytes]:
    """The header lines of ``raw`` (folded continuations joined to their line)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += b" " + line.strip()
        else:
            lines.append(line)
    return lines


async def test_allowed_unicode_arrives_without_extra_header_lines(
    aiohttp_client_factory: Any, make_settings: Any, smtp: SmtpTestServer
) -> None:
    client = await aiohttp_client_factory(make_settings())
    await add_account(client, smtp, default=True)
    subject = "Grüße\taus Köln — ½ € 😀 \u00a0non-breaking \u200bzero-width"
    tag = "Straße\tnº 5 — ok"
    sent = message(
        id="unicode-1",
        to=["Zoë Ärger <zoe@example.com>"],
        cc=['"Doe, Jöhn" <john@example.com>'],
        bcc=["hidden@example.com"],
        subject=subject,
        headers={"X-Tag": tag},
        **{"from": "José Müller <sender@example.com>"},
    )
    answer = await enqueue(client, [sent])
    assert answer["queued"] == 1, answer
    [got] = await smtp.wait_for_messages(1)
    names = [line.split(b":", 1)[0].lower() for line in _header_lines(got.raw)]
    assert sorted(names) == sorted(
        [
            b"from",
            b"to",
            b"cc",
            b"subject",
            b"x-tag",
            b"date",
            b"message-id",
            b"x-genro-mail-id",
            b"content-type",
            b"content-transfer-encoding",
            b"mime-version",
        ]
    )
    assert all(line.isascii() for line in _header_lines(got.raw))
    parsed = cast(EmailMessage, message_from_bytes(got.raw, policy=email_policy.default))
    assert parsed["Subject"] == subject
    assert parsed["X-Tag"] == tag
    assert parsed["From"].addresses[0].display_name == "José Müller"
    assert [a.display_name for a in parsed["To"].addresses] == ["Zoë Ärger"]
    assert [a.display_name for a in parsed["Cc"].addresses] == ["Doe, Jöhn"]
    assert sorted(got.rcpt_tos) == ["hidden@example.com", "john@example.com", "zoe@example.com"]
    assert b"hidden@example.com" not in got.raw


# -- a message that reached the queue another way (defect 2) ----------------------------------
#: (payload fields, the reason the message must fail with)
STORED_BAD = [
    ({"subject": "Grüße\u2028Bcc: victim@example.org"}, "subject: line separator U+2028"),
    ({"subject": "Hi\x0bBcc: victim@example.org"}, "subject: control character U+000B"),
    ({"to": ["Name\x85X <rcpt@example.com>"]}, "to: control character U+0085"),
    (
        {"headers": {"X-Tag": "a\u2029DKIM-Signature: x"}},
        "header X-Tag: paragraph separator U+2029",
    ),
    ({"bcc": ["hidden\x1e@example.com"]}, "bcc: control character U+001E"),
]


async def test_stored_message_with_a_line_break_fails_for_good_at_once(
    aiohttp_client_factory: Any, make_settings: Any, smtp: SmtpTestServer
) -> None:
    """Inserted through the storage, bypassing the API: one attempt, a clear reason, nothing
    at the SMTP server (it used to be retried as ``internal error: ValueError``)."""
    client = await aiohttp_client_factory(make_settings(retry_delays=[0.1]))
    await add_account(client, smtp, default=True)
    runtime = client.app[RUNTIME]
    base = {"from": "sender@example.com", "to": ["rcpt@example.com"], "body": "hi"}
    news = [
        NewMessage(
            "default", f"stored-{n}", "smtp1", 2, {**base, "subject": "s", **fields}, f"<s{n}@x>"
        )
        for n, (fields, _reason) in enumerate(STORED_BAD)
    ]
    await runtime.storage.enqueue(news, time.time())
    runtime.notify_enqueued()
    for n, (_fields, reason) in enumerate(STORED_BAD):
        msg = await wait_status(client, f"stored-{n}", ("error", "deferred"))
        assert (msg["status"], msg["attempts"]) == ("error", 1), msg
        assert msg["error"] == f"{reason} is not allowed"
    assert smtp.messages == []
