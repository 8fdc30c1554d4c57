"""PEC receipt parser: the two real receipts, every kind the test provider builds, negatives."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs7

from mail_proxy.ee.pec.parsing import EVENTS, PecReceipt, parse_files, parse_receipt
from support.corpora import corpus
from support.pec_provider import (
    KINDS,
    build_anomaly,
    build_certified_mail,
    build_receipt,
    signing_identity,
)

CORPUS = corpus("pec")
WHEN = datetime(2024, 3, 1, 9, 5, 7, tzinfo=timezone(timedelta(hours=1)))
ORIGINAL_ID = "<20240301090500.abc123@pec.mittente.example>"
SENDER = "ufficio@pec.mittente.example"
RECIPIENT = "protocollo@pec.destinatario.example"

EXPECTED_EVENTS = {
    "accettazione": "pec_acceptance",
    "non-accettazione": "pec_error",
    "presa-in-carico": "pec_taken_in_charge",
    "avvenuta-consegna": "pec_delivery",
    "errore-consegna": "pec_error",
    "preavviso-errore-consegna": "pec_delivery_warning",
    "rilevazione-virus": "pec_error",
}


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"PEC corpus not available ({path})")
    return path


def receipt(kind: str, **kwargs: object) -> bytes:
    args: dict[str, object] = {
        "original_message_id": ORIGINAL_ID,
        "sender": SENDER,
        "recipients": [RECIPIENT],
        "subject": "Fattura n. 42",
        "when": WHEN,
    }
    args.update(kwargs)
    return build_receipt(kind, **args)  # type: ignore[arg-type]


# --- the real receipts ------------------------------------------------------------------


def test_real_accettazione() -> None:
    r = parse_receipt(corpus_file("accettazione.eml").read_bytes())
    assert r.is_receipt and r.reason is None
    assert r.kind == "accettazione"
    assert r.event == "pec_acceptance"
    assert r.reference == "<SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it>"
    assert r.recipient == "rec@fakepec.it"
    assert r.recipients == ["rec@fakepec.it"]
    assert r.error is None and r.error_code is None and r.error_detail is None
    assert r.provider == "FAKEPEC PEC S.p.A."
    assert r.ts == "2024-11-15T18:20:38+01:00"
    assert r.identificativo == "opec210312.20241115182038.288127.606.1.53@fakepec.it"
    assert r.sender == "sender@fakepec.it"
    assert r.subject == "Test PEC"
    assert r.warnings == []


def test_real_errore_consegna() -> None:
    r = parse_receipt(corpus_file("errore-consegna.eml").read_bytes())
    assert r.is_receipt
    assert r.kind == "errore-consegna"
    assert r.event == "pec_error"
    # the file's X-Riferimento-Message-ID (@pec.it) and daticert <msgid> (@fakepec.it)
    # differ: the header gives the reference, the disagreement is a warning
    assert r.reference == "<SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@pec.it>"
    # the signed <msgid> is kept too: correlation tries it after the header
    assert r.daticert_msgid == "<SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it>"
    assert r.message_id == "<opec210312.20241115182103.186549.961.1.530.42@fakepec.it>"
    assert len(r.warnings) == 1
    assert "X-Riferimento-Message-ID" in r.warnings[0]
    assert "@fakepec.it>" in r.warnings[0]
    # <consegna> names the failed recipient (destinatari says rec@pec.it)
    assert r.recipient == "rec@fakepec.it"
    assert r.recipients == ["rec@pec.it"]
    assert r.error == "no-dest: 5.1.1 - FAKE Pec S.p.A. - indirizzo non valido"
    assert r.error_code == "no-dest"
    assert r.error_detail == "5.1.1 - FAKE Pec S.p.A. - indirizzo non valido"
    assert r.provider == "FAKE PEC S.p.A."
    assert r.ts == "2024-11-15T18:21:03+01:00"


def test_parse_files_real_and_built(tmp_path: Path) -> None:
    built = tmp_path / "consegna.eml"
    built.write_bytes(receipt("avvenuta-consegna"))
    paths = [corpus_file("accettazione.eml"), corpus_file("errore-consegna.eml"), built]
    rows = list(parse_files(paths))
    assert [row["file"] for row in rows] == [str(p) for p in paths]
    for row in rows:
        assert list(row)[:9] == [
            "file",
            "is_receipt",
            "kind",
            "event",
            "reference",
            "recipient",
            "error",
            "provider",
            "ts",
        ]
    assert [row["kind"] for row in rows] == [
        "accettazione",
        "errore-consegna",
        "avvenuta-consegna",
    ]
    assert rows[1]["error"].startswith("no-dest: 5.1.1")
    assert rows[2] | {"file": None, "warnings": None} == {
        "file": None,
        "is_receipt": True,
        "kind": "avvenuta-consegna",
        "event": "pec_delivery",
        "reference": ORIGINAL_ID,
        "recipient": RECIPIENT,
        "error": None,
        "provider": "Test PEC Provider",
        "ts": "2024-03-01T09:05:07+01:00",
        "reason": None,
        "warnings": None,
    }


# --- every kind, from the test provider -------------------------------------------------


def test_event_table() -> None:
    assert EVENTS == EXPECTED_EVENTS
    assert set(KINDS) == set(EVENTS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_maps_to_its_event(kind: str) -> None:
    r = parse_receipt(receipt(kind))
    assert r.is_receipt, r.reason
    assert r.kind == kind
    assert r.event == EXPECTED_EVENTS[kind]
    assert r.reference == ORIGINAL_ID
    assert r.recipient == RECIPIENT
    assert r.recipients == [RECIPIENT]
    assert r.provider == "Test PEC Provider"
    assert r.ts == "2024-03-01T09:05:07+01:00"
    assert r.identificativo and r.identificativo.endswith("@pec.mittente.example")
    assert r.subject == "Fattura n. 42"
    assert r.warnings == []


def test_error_receipt_fields() -> None:
    r = parse_receipt(
        receipt(
            "errore-consegna",
            recipients=[RECIPIENT, ("someone@example.com", "esterno")],
            recipient=RECIPIENT,
            error="no-dominio",
            error_detail="5.1.2 - Test PEC Provider - dominio non valido",
        )
    )
    assert r.event == "pec_error"
    assert r.recipient == RECIPIENT
    assert r.recipients == [RECIPIENT, "someone@example.com"]
    assert r.error == "no-dominio: 5.1.2 - Test PEC Provider - dominio non valido"
    assert r.error_code == "no-dominio"


def test_virus_receipt_error_code() -> None:
    r = parse_receipt(receipt("rilevazione-virus"))
    assert (r.event, r.error, r.error_code) == ("pec_error", "virus", "virus")


def test_acceptance_of_many_recipients_has_no_single_recipient() -> None:
    others = [RECIPIENT, "b@pec.destinatario.example", ("c@example.com", "esterno")]
    r = parse_receipt(receipt("accettazione", recipients=others))
    assert r.recipient is None
    assert r.recipients == [RECIPIENT, "b@pec.destinatario.example", "c@example.com"]


def test_complete_delivery_with_original_attached() -> None:
    # the original carries its own (fake) daticert.xml: it must not be taken for the receipt's
    original = (
        b"From: ufficio@pec.mittente.example\r\nMessage-ID: <x@y>\r\nSubject: orig\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b'--b\r\nContent-Type: application/xml; name="daticert.xml"\r\n\r\n'
        b'<postacert tipo="errore-consegna" errore="altro"/>\r\n--b--\r\n'
    )
    raw = receipt("avvenuta-consegna", original=original, receipt_type="completa")
    assert b"postacert.eml" in raw
    r = parse_receipt(raw)
    assert (r.kind, r.event, r.receipt_type, r.error) == (
        "avvenuta-consegna",
        "pec_delivery",
        "completa",
        None,
    )
    # without the receipt's own daticert, the original's is still not looked at
    r = parse_receipt(receipt("avvenuta-consegna", original=original, include_daticert=False))
    assert (r.kind, r.event) == ("avvenuta-consegna", "pec_delivery")
    assert any("no daticert.xml" in w for w in r.warnings)


def test_brief_delivery_receipt_type() -> None:
    r = parse_receipt(receipt("avvenuta-consegna", receipt_type="breve", html=False))
    assert r.receipt_type == "breve"
    assert r.event == "pec_delivery"


def test_signature_part_is_real_pkcs7() -> None:
    raw = receipt("accettazione")
    assert b'multipart/signed; protocol="application/pkcs7-signature"' in raw
    from email import message_from_bytes

    msg = message_from_bytes(raw)
    signed, signature = msg.get_payload()
    assert signed.get_content_type() == "multipart/mixed"
    assert signature.get_content_type() == "application/pkcs7-signature"
    certs = pkcs7.load_der_pkcs7_certificates(signature.get_payload(decode=True))
    assert certs == [signing_identity()[0]]


def test_to_dict() -> None:
    d = parse_receipt(receipt("presa-in-carico")).to_dict()
    assert d["kind"] == "presa-in-carico"
    assert d["event"] == "pec_taken_in_charge"
    assert d["warnings"] == [] and d["recipients"] == [RECIPIENT]
    assert set(d) == set(PecReceipt.__dataclass_fields__)


# --- disagreements and fallbacks --------------------------------------------------------


def test_header_daticert_kind_disagreement_daticert_wins() -> None:
    r = parse_receipt(receipt("avvenuta-consegna", header_kind="accettazione"))
    assert r.is_receipt
    assert r.kind == "avvenuta-consegna"
    assert r.event == "pec_delivery"
    assert any("X-Ricevuta 'accettazione'" in w and "daticert" in w for w in r.warnings)


def test_reference_disagreement_is_a_warning() -> None:
    r = parse_receipt(receipt("accettazione", daticert_msgid="<other@pec.mittente.example>"))
    assert r.reference == ORIGINAL_ID
    assert any("<other@pec.mittente.example>" in w for w in r.warnings)


def test_reference_brackets_normalised() -> None:
    r = parse_receipt(receipt("accettazione", original_message_id="bare@pec.mittente.example"))
    assert r.reference == "<bare@pec.mittente.example>"


def test_no_daticert_falls_back_to_headers() -> None:
    r = parse_receipt(receipt("errore-consegna", include_daticert=False))
    assert r.is_receipt
    assert (r.kind, r.event, r.reference) == ("errore-consegna", "pec_error", ORIGINAL_ID)
    assert r.provider is None and r.ts is None
    assert any("no daticert.xml" in w for w in r.warnings)


def test_opaque_signed_envelope_is_read_from_headers_only() -> None:
    raw = receipt("accettazione", envelope="opaque")
    assert b"application/pkcs7-mime" in raw
    r = parse_receipt(raw)
    assert r.is_receipt
    assert (r.kind, r.event, r.reference) == ("accettazione", "pec_acceptance", ORIGINAL_ID)
    assert r.provider is None
    assert any("not unwrapped" in w for w in r.warnings)


# --- not receipts -----------------------------------------------------------------------


def test_certified_mail_is_not_a_receipt() -> None:
    raw = build_certified_mail(
        original_message_id=ORIGINAL_ID,
        sender=SENDER,
        recipients=[RECIPIENT],
        subject="Fattura n. 42",
        when=WHEN,
    )
    assert b"X-Trasporto: posta-certificata" in raw
    r = parse_receipt(raw)
    assert not r.is_receipt
    assert r.kind is None and r.event is None
    assert "posta-certificata" in (r.reason or "")


def test_certified_mail_without_transport_header_is_still_not_a_receipt() -> None:
    raw = build_certified_mail(
        original_message_id=ORIGINAL_ID, sender=SENDER, recipients=[RECIPIENT], subject="x"
    )
    raw = raw.replace(b"X-Trasporto: posta-certificata\r\n", b"")
    r = parse_receipt(raw)
    assert not r.is_receipt
    assert "posta-certificata" in (r.reason or "")


def test_anomaly_is_not_a_receipt() -> None:
    raw = build_anomaly(
        original_message_id=ORIGINAL_ID,
        sender="someone@example.com",
        recipients=[RECIPIENT],
        subject="Fattura n. 42",
        when=WHEN,
    )
    assert b"X-Trasporto: errore" in raw
    r = parse_receipt(raw)
    assert not r.is_receipt
    assert "errore" in (r.reason or "")


def test_plain_message_is_not_a_receipt() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = "hello"
    msg["Message-ID"] = "<1@example.com>"
    msg.set_content("hi")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="a.pdf")
    r = parse_receipt(msg.as_bytes())
    assert not r.is_receipt
    assert r.reason == "no X-Ricevuta header and no daticert.xml"


@pytest.mark.parametrize("raw", [b"", b"\x00\xff garbage", b"X-Ricevuta: \r\n\r\nbody"])
def test_garbage_is_not_a_receipt(raw: bytes) -> None:
    assert parse_receipt(raw).is_receipt is False


def test_unknown_kind_is_not_a_receipt() -> None:
    r = parse_receipt(receipt("accettazione", include_daticert=False, header_kind="bogus"))
    assert not r.is_receipt
    assert r.kind == "bogus"
    assert "bogus" in (r.reason or "")


# --- hostile daticert -------------------------------------------------------------------

_DOCTYPE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE postacert [\n<!ENTITY e "errore-consegna">\n]>\n'
    b'<postacert tipo="&e;" errore="nessuno"><dati><msgid>&lt;x@y&gt;</msgid></dati>'
    b"</postacert>\n"
)
_BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n'
    b'<postacert tipo="accettazione" errore="nessuno"><dati>&lol2;</dati></postacert>\n'
)
_EXTERNAL = (
    b'<?xml version="1.0"?>\n<!doctype postacert SYSTEM "file:///etc/passwd">\n'
    b'<postacert tipo="accettazione" errore="nessuno"/>\n'
)
# the same declaration in UTF-16: invisible to a byte search, refused by the XML parser
_UTF16 = (
    '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE postacert [<!ENTITY e "x">]>\n'
    '<postacert tipo="accettazione" errore="nessuno"/>\n'
).encode("utf-16")


@pytest.mark.parametrize(
    "xml", [_DOCTYPE, _BILLION_LAUGHS, _EXTERNAL, _UTF16], ids=["doctype", "laughs", "ext", "u16"]
)
def test_daticert_with_dtd_is_refused(xml: bytes) -> None:
    r = parse_receipt(receipt("accettazione", daticert=xml))
    assert not r.is_receipt
    assert r.kind is None
    assert r.reason and r.reason.startswith("daticert.xml refused")
    assert "DOCTYPE" in r.reason or "ENTITY" in r.reason


def test_malformed_daticert_is_refused() -> None:
    r = parse_receipt(receipt("accettazione", daticert=b"<postacert tipo='accettazione'>"))
    assert not r.is_receipt
    assert "malformed" in (r.reason or "")


def test_daticert_with_wrong_root_is_refused() -> None:
    r = parse_receipt(receipt("accettazione", daticert=b"<html><body/></html>"))
    assert not r.is_receipt
    assert "postacert" in (r.reason or "")


def test_oversized_daticert_is_refused() -> None:
    big = b'<postacert tipo="accettazione"><x>' + b"a" * 300_000 + b"</x></postacert>"
    r = parse_receipt(receipt("accettazione", daticert=big))
    assert not r.is_receipt
    assert "larger than" in (r.reason or "")


def test_missing_headers_fall_back_to_daticert() -> None:
    raw = receipt("avvenuta-consegna")
    raw = raw.replace(b"X-Ricevuta: avvenuta-consegna\r\n", b"")
    raw = raw.replace(f"X-Riferimento-Message-ID: {ORIGINAL_ID}\r\n".encode(), b"")
    r = parse_receipt(raw)
    assert (r.is_receipt, r.kind, r.reference) == (True, "avvenuta-consegna", ORIGINAL_ID)
    assert any("no X-Ricevuta" in w for w in r.warnings)
    assert any("no X-Riferimento-Message-ID" in w for w in r.warnings)
