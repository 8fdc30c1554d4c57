"""Addresses on the SMTP wire: envelope_address and headers_need_smtputf8 (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from mail_proxy.ce.transport.addresses import envelope_address, headers_need_smtputf8
from mail_proxy.core.contracts.errors import MessageContentError
from mail_proxy.core.engine.mime import build_email


@pytest.mark.parametrize(
    ("addr", "wire", "smtputf8"),
    [
        ("a@example.com", "a@example.com", False),
        ("", "", False),  # the null sender
        ("postmaster", "postmaster", False),
        ("user@bücher.de", "user@xn--bcher-kva.de", False),
        ("user@BÜCHER.de", "user@xn--bcher-kva.de", False),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de", False),
        ("j@straße.de", "j@xn--strae-oqa.de", False),  # IDNA 2008, not strasse.de
        ('"john doe"@example.com', '"john doe"@example.com', False),
        ('"john doe"@bücher.de', '"john doe"@xn--bcher-kva.de', False),
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v", True),
        ("müller@example.de", "müller@example.de", True),
        ('"jöhn doe"@bücher.de', '"jöhn doe"@xn--bcher-kva.de', True),
    ],
)
def test_envelope_address(addr: str, wire: str, smtputf8: bool) -> None:
    assert envelope_address(addr) == (wire, smtputf8)


@pytest.mark.parametrize("addr", ["a@😀.example", "a@bücher..de", "ü-no-domain", "ü@"])
def test_envelope_address_refuses_what_cannot_go_on_the_wire(addr: str) -> None:
    with pytest.raises(MessageContentError):
        envelope_address(addr)


def _built(**fields: Any) -> Any:
    payload = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", **fields}
    return build_email(payload, message_id="<x@example.com>", mail_id="m1")


@pytest.mark.parametrize(
    ("fields", "needed"),
    [
        ({}, False),
        ({"subject": "Grüße", "from": "Jörg <a@example.com>"}, False),  # names: encoded words
        ({"to": ["user@bücher.de"], "cc": ["Zoë <z@münchen.de>"]}, False),  # A-labels
        ({"from": "用户@例子.广告"}, True),  # a sender that is not in the envelope
        ({"reply_to": "Name <müller@example.de>"}, True),
        ({"to": ["a@example.com", "名字 <用户@例子.广告>"]}, True),
        ({"bcc": ["用户@例子.广告"]}, False),  # bcc is only in the envelope
    ],
)
def test_headers_need_smtputf8(fields: dict[str, Any], needed: bool) -> None:
    assert headers_need_smtputf8(_built(**fields)) is needed
