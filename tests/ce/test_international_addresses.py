"""International addresses through the real API (issue 16, defect 7).

IDN domains (Unicode or ``xn--``), quoted local parts and UTF-8 local parts are accepted at
enqueue and stored as written; the message written by the ``file`` transport carries the
domains as A-labels, and a UTF-8 local part as UTF-8 (RFC 6532).
"""

from __future__ import annotations

from email import message_from_string
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest

from mail_proxy.core.testing.smtp import SmtpTestServer
from support.api import add_account, enqueue, wait_status
from support.api import message as smtp_message
from support.ce_api import Api, message


@pytest.fixture
async def api(api: Api) -> Api:
    """The shared ``api`` (tests/conftest.py) with a default account ``main``."""
    await api.add_account("main")
    return api


ACCEPTED = [
    {"to": ["user@bücher.de"]},
    {"to": ["user@xn--bcher-kva.de"]},
    {"to": ['"john doe"@example.com']},
    {"to": ["用户@例子.广告"]},
    {"to": 'Jörg <j@straße.de>, "Doe, John" <"j d"@example.com>'},
    {"cc": ["müller@example.de"], "bcc": ["b@münchen.de"]},
    {"from": "名字 <用户@例子.广告>", "reply_to": "r@bücher.de", "return_path": "b@bücher.de"},
]

REJECTED = [
    ({"to": ["user@xn--zz.de"]}, "invalid recipient address: user@xn--zz.de"),
    ({"to": ["user@😀.example"]}, "invalid recipient address: user@😀.example"),
    ({"to": ['"a\\b"@example.com']}, 'invalid recipient address: "a\\b"@example.com'),
    ({"cc": ["a b@example.com"]}, "invalid recipient address: a b@example.com"),
    ({"from": "x@bücher..de"}, "invalid from address"),
    ({"reply_to": "a@[127.0.0.1]"}, "invalid reply_to address"),
]


async def test_international_addresses_are_accepted_and_stored_as_written(api: Api) -> None:
    entries = [message(f"ok-{n}", **fields) for n, fields in enumerate(ACCEPTED)]
    entries += [message(f"bad-{n}", **fields) for n, (fields, _r) in enumerate(REJECTED)]
    answer = await api.send(*entries)
    assert answer["queued"] == len(ACCEPTED), answer
    assert [r["reason"] for r in answer["rejected"]] == [reason for _f, reason in REJECTED]
    stored = (await api.get("/messages/ok-4"))["message"]
    assert stored["to"] == ["Jörg <j@straße.de>", '"Doe, John" <"j d"@example.com>']


def _eml(directory: Path, msg_id: str) -> EmailMessage:
    raw = (directory / f"{msg_id}.eml").read_bytes()
    return cast(EmailMessage, message_from_string(raw.decode(), policy=email_policy.SMTPUTF8))


async def test_the_written_message_has_a_label_domains(api: Api) -> None:
    await api.send(
        message(
            "idn",
            to=["Jörg <user@bücher.de>", '"john doe"@straße.de'],
            cc=["x@xn--mnchen-3ya.de"],
            **{"from": "Sender <s@例子.广告>"},
        ),
        message("utf8-local", to=["名字 <用户@例子.广告>"]),
    )
    await api.post("/commands/run-now")
    assert await api.wait_status("idn", "sent") == "sent"
    assert await api.wait_status("utf8-local", "sent") == "sent"
    out = api.tmp_path / "out"
    idn = _eml(out, "idn")
    assert (out / "idn.eml").read_bytes().isascii()  # nothing here needs SMTPUTF8
    assert [a.addr_spec for a in idn["To"].addresses] == [
        "user@xn--bcher-kva.de",
        '"john doe"@xn--strae-oqa.de',
    ]
    assert idn["To"].addresses[0].display_name == "Jörg"
    assert [a.addr_spec for a in idn["Cc"].addresses] == ["x@xn--mnchen-3ya.de"]
    assert idn["From"].addresses[0].addr_spec == "s@xn--fsqu00a.xn--4rr70v"
    utf8 = _eml(out, "utf8-local")
    assert [a.addr_spec for a in utf8["To"].addresses] == ["用户@xn--fsqu00a.xn--4rr70v"]
    assert "用户@xn--fsqu00a.xn--4rr70v".encode() in (out / "utf8-local.eml").read_bytes()


async def test_an_idn_domain_goes_on_the_wire_as_an_a_label(
    aiohttp_client_factory: Any, make_settings: Any
) -> None:
    async with SmtpTestServer() as smtp:
        client = await aiohttp_client_factory(make_settings())
        await add_account(client, smtp, default=True)
        await enqueue(client, [smtp_message(id="wire", to=["user@bücher.de"])])
        await wait_status(client, "wire", "sent")
        [got] = smtp.messages
        assert got.rcpt_tos == ["user@xn--bcher-kva.de"]
        assert "SMTPUTF8" not in got.mail_options
