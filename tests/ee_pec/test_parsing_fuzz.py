"""A seeded fuzz run over the PEC receipt parser: mutated real and built receipts (bytes
flipped, cut, repeated, headers and daticert fields scrambled) never make it raise, and what it
returns stays well-formed."""

from __future__ import annotations

import random

import pytest

from mail_proxy.ee.pec.parsing import EVENTS, PecReceipt, parse_receipt
from support.corpora import corpus
from support.pec_provider import KINDS, build_receipt

CORPUS = corpus("pec")
ROUNDS = 400


def seeds() -> list[bytes]:
    out = [
        build_receipt(
            kind,
            original_message_id=f"<m{n}@pec.test>",
            sender="a@pec.test",
            recipients=["b@pec.test", "c@pec.test"],
            recipient="b@pec.test",
            subject="Oggetto è",
        )
        for n, kind in enumerate(KINDS)
    ]
    out += [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))]
    return out


def mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        at = rng.randrange(len(data)) if data else 0
        if op == 0 and data:  # flip bytes
            data[at] = rng.randrange(256)
        elif op == 1:  # cut
            del data[at : at + rng.randint(1, 400)]
        elif op == 2:  # repeat a slice
            data[at:at] = data[at : at + rng.randint(1, 200)]
        elif op == 3:  # scramble a PEC marker
            for marker in (b"X-Ricevuta", b"daticert.xml", b"boundary=", b"base64", b"tipo="):
                if marker in data and rng.random() < 0.5:
                    i = data.index(marker)
                    data[i : i + len(marker)] = bytes(rng.randrange(32, 127) for _ in marker)
        elif op == 4:  # insert noise (NULs, CR, non-UTF-8)
            data[at:at] = bytes(rng.choice(b"\x00\r\n\xff<>&;\"'") for _ in range(8))
        else:  # truncate
            del data[at:]
    return bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_receipts_never_break_the_parser(seed: int) -> None:
    rng = random.Random(seed)
    pool = seeds()
    for _ in range(ROUNDS):
        receipt = parse_receipt(mutate(rng, rng.choice(pool)))
        assert isinstance(receipt, PecReceipt)
        if receipt.is_receipt:
            assert receipt.kind in EVENTS and receipt.event == EVENTS[receipt.kind]
            for ref in (receipt.reference, receipt.daticert_msgid, receipt.message_id):
                assert ref is None or (ref.startswith("<") and ref.endswith(">"))
        else:
            assert receipt.reason
