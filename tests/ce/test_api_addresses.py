"""The strict mailbox parser of the enqueue validator (no server needed)."""

from __future__ import annotations

import random
from email.utils import getaddresses

import pytest

from mail_proxy.ce.api.addresses import (
    AddressError,
    normalise_address_list,
    normalise_mailbox,
    parse_general,
    parse_mailbox,
    split_address_list,
)
from mail_proxy.core.engine.mime import envelope


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a@example.com", "a@example.com"),
        ("  a@example.com ", "a@example.com"),
        ("<a@example.com>", "a@example.com"),
        ("Mario Rossi <m@example.it>", "Mario Rossi <m@example.it>"),
        ('"Doe, John" <j@example.com>', '"Doe, John" <j@example.com>'),
        ('"a<b" <x@example.com>', '"a<b" <x@example.com>'),
        ("Zoë Ünïcode <z@example.com>", "Zoë Ünïcode <z@example.com>"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("user@localhost", "user@localhost"),
        # international addresses (RFC 6531 local parts, IDNA 2008 domains), quoted locals
        ("user@bücher.de", "user@bücher.de"),
        ("Jörg <user@BÜCHER.de>", "Jörg <user@BÜCHER.de>"),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("用户@例子.广告", "用户@例子.广告"),
        ("名字 <用户@例子.广告>", "名字 <用户@例子.广告>"),
        ("müller@example.de", "müller@example.de"),
        ('"john doe"@example.com', '"john doe"@example.com'),
        ('John <"john doe"@example.com>', 'John <"john doe"@example.com>'),
        ('"Doe, John" <"j,d"@example.com>', '"Doe, John" <"j,d"@example.com>'),
        ('"a\\"b"@example.com', '"a\\"b"@example.com'),
        ('N <"a<b"@example.com>', 'N <"a<b"@example.com>'),
        ("ü" * 32 + "@example.de", "ü" * 32 + "@example.de"),
    ],
)
def test_valid_mailboxes(text: str, expected: str) -> None:
    assert normalise_mailbox(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "plain",
        "a@",
        "@b.com",
        "a@b@c.com",
        "a..b@c.com",
        ".a@c.com",
        "a@-b.com",
        "a@b..com",
        "a b@c.com",
        "x <a@b.com",
        "Foo <a@b.com> junk",
        "a@b.com <c@d.com>",
        "<a@b.com> <c@d.com>",
        "a@[127.0.0.1]",
        "user@xn--zz.de",  # not a valid A-label
        "a@😀.com",  # not valid under IDNA 2008
        "a@bücher..de",
        '""@example.com',
        '"a\\b"@example.com',  # an escape that is not needed: not the canonical form
        "a\u3000b@example.de",  # a Unicode space in the local part
        "a\u00a0b@example.de",
        "ü" * 33 + "@example.de",  # 66 octets in UTF-8
        "a@exa_mple.com",
        "a\t@b.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
    ],
)
def test_invalid_mailboxes(text: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_mailbox(text)
    assert info.value.injection is False


@pytest.mark.parametrize(
    "text",
    ["a@b.com\r\nBcc: x@y.com", "Evil\nName <a@b.com>", "a@b.com\x00", "Name\r <a@b.com>"],
)
def test_injection_is_flagged(text: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_mailbox(text)
    assert info.value.injection is True


def test_address_lists() -> None:
    assert split_address_list('a@x.com, "B, C" <b@y.com>,, d@z.com,') == [
        "a@x.com",
        ' "B, C" <b@y.com>',
        " d@z.com",
    ]
    assert normalise_address_list('a@x.com, "B, C" <b@y.com>') == ["a@x.com", '"B, C" <b@y.com>']
    assert normalise_address_list(["a@x.com", "B <b@y.com>"]) == ["a@x.com", "B <b@y.com>"]
    assert normalise_address_list("") == []
    with pytest.raises(AddressError):
        normalise_address_list(["a@x.com, b@y.com"])  # one element, two mailboxes
    with pytest.raises(AddressError):
        normalise_address_list(["a@x.com", ""])
    with pytest.raises(AddressError) as info:
        normalise_address_list("a@x.com\r\nBcc: evil@y.com")
    assert info.value.injection


def test_fuzz_normalised_mailboxes_are_safe_and_stable() -> None:
    """Random strings built from address characters: whatever is accepted normalises to one
    mailbox with no CR/LF, is stable when normalised again, and puts exactly that one
    address in the SMTP envelope."""
    rng = random.Random(20240611)
    alphabet = 'ab.@<>" ,\\\r\n\tZ\x00é()[];:-+'
    pieces = [
        "a@example.com",
        "Name ",
        "<",
        ">",
        '"',
        "b@x.org",
        ",",
        "\r\n",
        "@",
        " ",
        "Zoë",
        "J.",
        "\u00a0",
        "O'Brien",
        "  ",
        '"j d"@x.org',
        "用户@例子.广告",
        "@bücher.de",
        "\\",
        "\u2028",
    ]
    accepted = 0
    for _ in range(5000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        else:
            text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        try:
            general: tuple[str, str] | None = parse_general(text)
        except AddressError:
            general = None
        try:
            name, addr = parse_mailbox(text)
        except AddressError:
            assert general is None, text
            continue
        assert (name, addr) == general, text  # the fast path agrees with the general one
        accepted += 1
        normal = normalise_mailbox(text)
        assert "\r" not in normal and "\n" not in normal and "\x00" not in normal
        assert normalise_mailbox(normal) == normal
        assert getaddresses([normal]) == [(name, addr)]
        sender, rcpts = envelope({"from": normal, "to": [normal]})
        assert sender == addr and rcpts == [addr]
    assert accepted > 50  # the generator does produce valid mailboxes
