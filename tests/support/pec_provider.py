"""A test PEC provider: receipts, certified mail and anomaly envelopes shaped like real ones.

What a PEC provider sends its user, built for tests (layout of the real receipts in the PEC
corpus, headers and daticert.xml per the service's technical rules):

* :func:`build_receipt` — a receipt of any kind: ``multipart/signed;
  protocol="application/pkcs7-signature"`` whose first part is ``multipart/mixed`` with a
  ``multipart/alternative`` (text + optional HTML), ``daticert.xml`` and, for a complete
  ``avvenuta-consegna``, optionally the original message (``postacert.eml``).
* :func:`build_certified_mail` — incoming certified mail (``X-Trasporto: posta-certificata``).
* :func:`build_anomaly` — an anomaly envelope (``X-Trasporto: errore``).

The signature is real: a detached PKCS#7 SignedData over the exact bytes of the first part,
made with ``cryptography`` by a self-signed test certificate generated once per process
(:func:`signing_identity`). ``envelope="opaque"`` makes an ``application/pkcs7-mime``
(signed-data) envelope instead. Output uses CRLF line ends (the wire form).

Knobs for negative tests: ``header_kind`` (an ``X-Ricevuta`` that disagrees with daticert),
``daticert_msgid`` (a ``<msgid>`` that disagrees with ``X-Riferimento-Message-ID``),
``daticert`` (replace the XML outright), ``include_daticert=False``.
"""

from __future__ import annotations

import base64
import functools
import io
import itertools
import os
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime
from typing import TypeVar
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

KINDS = (
    "accettazione",
    "non-accettazione",
    "presa-in-carico",
    "avvenuta-consegna",
    "errore-consegna",
    "preavviso-errore-consegna",
    "rilevazione-virus",
)

#: the kinds that name one recipient in ``<consegna>`` (issued per recipient)
PER_RECIPIENT = frozenset(
    {"avvenuta-consegna", "errore-consegna", "preavviso-errore-consegna", "rilevazione-virus"}
)

# Subject prefix (the service's rules), title of the text/HTML part, default errore attribute
_SUBJECT = {
    "accettazione": "ACCETTAZIONE",
    "non-accettazione": "AVVISO DI NON ACCETTAZIONE",
    "presa-in-carico": "PRESA IN CARICO",
    "avvenuta-consegna": "CONSEGNA",
    "errore-consegna": "AVVISO DI MANCATA CONSEGNA",
    "preavviso-errore-consegna": "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO",
    "rilevazione-virus": "PROBLEMA DI SICUREZZA",
}
_TITLE = {
    "accettazione": "Ricevuta di accettazione",
    "non-accettazione": "Avviso di non accettazione",
    "presa-in-carico": "Ricevuta di presa in carico",
    "avvenuta-consegna": "Ricevuta di avvenuta consegna",
    "errore-consegna": "Avviso di mancata consegna",
    "preavviso-errore-consegna": "Avviso di mancata consegna entro 12 ore",
    "rilevazione-virus": "Avviso di rilevazione virus",
}
_OUTCOME = {
    "accettazione": "\u00e8 stato accettato dal sistema ed inoltrato.",
    "non-accettazione": "non \u00e8 stato accettato dal sistema.",
    "presa-in-carico": "\u00e8 stato preso in carico dal gestore del destinatario.",
    "avvenuta-consegna": "\u00e8 stato consegnato nella casella di destinazione.",
    "errore-consegna": "non \u00e8 stato consegnato: il messaggio \u00e8 stato rifiutato.",
    "preavviso-errore-consegna": "non risulta consegnato entro 12 ore dall'invio.",
    "rilevazione-virus": "contiene un virus e non \u00e8 stato consegnato.",
}
_DEFAULT_ERROR = {
    "non-accettazione": "altro",
    "errore-consegna": "no-dest",
    "preavviso-errore-consegna": "altro",
    "rilevazione-virus": "virus",
}

_SERIAL = itertools.count(1)
_M = TypeVar("_M", bound=Message)
_CRLF = compat32.clone(linesep="\r\n")

Recipient = str | tuple[str, str]  # "addr" (certificato) or ("addr", "certificato"|"esterno")


@functools.lru_cache(maxsize=1)
def signing_identity() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """The self-signed test certificate and its key (made once per process)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "IT"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test PEC Provider"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Test PEC Provider signing key"),
        ]
    )
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("posta-certificata@test-pec.example")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def build_receipt(
    kind: str,
    *,
    original_message_id: str,
    sender: str,
    recipients: Sequence[Recipient],
    recipient: str | None = None,
    error: str | None = None,
    error_detail: str | None = None,
    subject: str,
    provider: str = "Test PEC Provider",
    when: datetime | None = None,
    identificativo: str | None = None,
    receipt_type: str = "completa",
    original: bytes | None = None,
    html: bool = True,
    envelope: str = "multipart",
    header_kind: str | None = None,
    daticert_msgid: str | None = None,
    daticert: bytes | None = None,
    include_daticert: bool = True,
) -> bytes:
    """The raw bytes of a PEC receipt of ``kind`` for the message ``original_message_id``.

    ``recipients``: the original's recipients (``destinatari``), each an address (a PEC
    mailbox) or ``(address, "certificato"|"esterno")``. ``recipient``: the ``<consegna>``
    address of a per-recipient receipt (default: the only recipient). ``error`` is the
    ``errore`` attribute (default per kind: ``nessuno``, ``no-dest`` for errore-consegna,
    ``virus``, ``altro``) and ``error_detail`` the ``<errore-esteso>`` text. ``when`` (naive
    means UTC; default now) dates the receipt. ``original``: raw original message attached
    as ``postacert.eml`` to a complete ``avvenuta-consegna``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown receipt kind {kind!r}")
    if envelope not in ("multipart", "opaque"):
        raise ValueError("envelope is 'multipart' or 'opaque'")
    when = _aware(when)
    dest = _recipients(recipients)
    consegna = None
    if kind in PER_RECIPIENT:
        if recipient is None:
            if len(dest) != 1:
                raise ValueError(f"{kind} is per recipient: pass recipient=")
            recipient = dest[0][0]
        consegna = recipient
    issuer = _domain(consegna if kind in PER_RECIPIENT else sender)
    ident = identificativo or _identificativo(when, _domain(sender))
    errore = error or _DEFAULT_ERROR.get(kind, "nessuno")

    if daticert is None:
        dati = [
            ("gestore-emittente", {}, provider),
            ("data", {"zona": when.strftime("%z")}, None),
            ("identificativo", {}, ident),
            ("msgid", {}, daticert_msgid or original_message_id),
        ]
        if kind == "avvenuta-consegna":
            dati.append(("ricevuta", {"tipo": receipt_type}, None))
        if consegna is not None:
            dati.append(("consegna", {}, consegna))
        if error_detail:
            dati.append(("errore-esteso", {}, error_detail))
        daticert = _daticert(kind, errore, sender, dest, subject, when, dati)

    text, html_text = _receipt_text(
        kind, sender, dest, consegna, subject, when, ident, error_detail
    )
    inner = MIMEMultipart("mixed")
    inner.attach(_alternative(text, html_text if html else None))
    if include_daticert:
        inner.attach(_xml_part(daticert))
    if kind == "avvenuta-consegna" and receipt_type == "completa" and original is not None:
        inner.attach(_attached_message(original))

    headers = [
        ("Return-Path", f"<posta-certificata@{issuer}>"),
        ("Subject", f"{_SUBJECT[kind]}: {subject}"),
        ("X-Riferimento-Message-ID", _bracketed(original_message_id)),
        ("Date", format_datetime(when)),
        ("To", sender),
        ("X-Ricevuta", header_kind or kind),
        ("From", f"posta-certificata@{issuer}"),
        ("Message-ID", _receipt_message_id(when, issuer)),
    ]
    return _signed(headers, inner, opaque=envelope == "opaque")


def build_certified_mail(
    *,
    original_message_id: str,
    sender: str,
    recipients: Sequence[Recipient],
    subject: str,
    body: str = "Messaggio di prova.\n",
    provider: str = "Test PEC Provider",
    when: datetime | None = None,
) -> bytes:
    """Incoming certified mail: the ``posta-certificata`` transport envelope (not a receipt)."""
    when = _aware(when)
    dest = _recipients(recipients)
    domain = _domain(sender)
    ident = _identificativo(when, domain)
    dati = [
        ("gestore-emittente", {}, provider),
        ("data", {"zona": when.strftime("%z")}, None),
        ("identificativo", {}, ident),
        ("msgid", {}, original_message_id),
    ]
    xml = _daticert("posta-certificata", "nessuno", sender, dest, subject, when, dati)
    text = (
        "Messaggio di posta certificata\n\n"
        f"Il giorno {when:%d/%m/%Y} alle ore {when:%H:%M:%S} ({when:%z}) il messaggio\n"
        f'"{subject}" \u00e8 stato inviato da "{sender}"\n'
        f"indirizzato a:\n{_list(dest)}\n"
        "Il messaggio originale \u00e8 incluso in allegato.\n"
        f"Identificativo messaggio: {ident}\n"
    )
    inner = MIMEMultipart("mixed")
    inner.attach(_alternative(text, None))
    inner.attach(_attached_message(_original(original_message_id, sender, dest, subject, body)))
    inner.attach(_xml_part(xml))
    headers = [
        ("Subject", f"POSTA CERTIFICATA: {subject}"),
        ("X-Riferimento-Message-ID", _bracketed(original_message_id)),
        ("Date", format_datetime(when)),
        ("From", f'"Per conto di: {sender}" <posta-certificata@{domain}>'),
        ("Reply-To", sender),
        ("To", ", ".join(addr for addr, _ in dest)),
        ("X-Trasporto", "posta-certificata"),
        ("Message-ID", _receipt_message_id(when, domain)),
    ]
    return _signed(headers, inner)


def build_anomaly(
    *,
    original_message_id: str,
    sender: str,
    recipients: Sequence[Recipient],
    subject: str,
    body: str = "Messaggio di prova.\n",
    provider: str = "Test PEC Provider",
    when: datetime | None = None,
) -> bytes:
    """An anomaly envelope (``X-Trasporto: errore``): a message that failed PEC checks."""
    when = _aware(when)
    dest = _recipients(recipients)
    domain = _domain(dest[0][0])  # issued by the recipient's provider
    ident = _identificativo(when, domain)
    text = (
        "Anomalia nel messaggio\n\n"
        f"Il giorno {when:%d/%m/%Y} alle ore {when:%H:%M:%S} ({when:%z}) \u00e8 stato\n"
        f'ricevuto il messaggio "{subject}" proveniente da "{sender}".\n'
        f"{provider} non ha potuto verificarne la provenienza o l'integrit\u00e0:\n"
        "il messaggio originale \u00e8 incluso in allegato.\n"
        f"Identificativo messaggio: {ident}\n"
    )
    inner = MIMEMultipart("mixed")
    inner.attach(_alternative(text, None))
    inner.attach(_attached_message(_original(original_message_id, sender, dest, subject, body)))
    headers = [
        ("Subject", f"ANOMALIA MESSAGGIO: {subject}"),
        ("X-Riferimento-Message-ID", _bracketed(original_message_id)),
        ("Date", format_datetime(when)),
        ("From", f'"Per conto di: {sender}" <posta-certificata@{domain}>'),
        ("Reply-To", sender),
        ("To", ", ".join(addr for addr, _ in dest)),
        ("X-Trasporto", "errore"),
        ("Message-ID", _receipt_message_id(when, domain)),
    ]
    return _signed(headers, inner)


# --- pieces -----------------------------------------------------------------------------


def _aware(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now(timezone(timedelta(hours=1))).replace(microsecond=0)
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _recipients(recipients: Sequence[Recipient]) -> list[tuple[str, str]]:
    if isinstance(recipients, str):
        recipients = [recipients]
    out = [(r, "certificato") if isinstance(r, str) else (r[0], r[1]) for r in recipients]
    if not out:
        raise ValueError("at least one recipient")
    return out


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip(" >").lower() or "test-pec.example"


def _bracketed(message_id: str) -> str:
    inner = message_id.strip().strip("<>")
    return f"<{inner}>"


def _identificativo(when: datetime, domain: str) -> str:
    return f"opec.{when:%Y%m%d%H%M%S}.{os.getpid()}.{next(_SERIAL)}@{domain}"


def _receipt_message_id(when: datetime, domain: str) -> str:
    return f"<opec.{when:%Y%m%d%H%M%S}.{os.urandom(4).hex()}.{next(_SERIAL)}@{domain}>"


def _list(dest: list[tuple[str, str]]) -> str:
    label = {"certificato": "posta certificata", "esterno": "posta ordinaria"}
    return "\n".join(f'{addr} ("{label.get(tipo, tipo)}")' for addr, tipo in dest)


def _receipt_text(
    kind: str,
    sender: str,
    dest: list[tuple[str, str]],
    consegna: str | None,
    subject: str,
    when: datetime,
    ident: str,
    error_detail: str | None,
) -> tuple[str, str]:
    title = _TITLE[kind]
    stamp = f"Il giorno {when:%d/%m/%Y} alle ore {when:%H:%M:%S} ({when:%z})"
    target = f'destinato all\'utente "{consegna}"' if consegna else f"indirizzato a:\n{_list(dest)}"
    lines = [
        f"-- {title} --",
        "",
        f'{stamp} il messaggio con Oggetto "{subject}" inviato da "{sender}"',
        target,
        _OUTCOME[kind],
    ]
    if error_detail:
        lines.append(f"Errore: {error_detail}")
    lines += [f"Identificativo del messaggio: {ident}", ""]
    text = "\n".join(lines)
    html = (
        f"<html>\n<head><title>{escape(title)}</title></head>\n<body>\n"
        f"<h3>{escape(title)}</h3>\n<hr><br>\n"
        + "<br>\n".join(escape(line) for line in lines[2:] if line)
        + "<br>\n</body>\n</html>\n"
    )
    return text, html


def _daticert(
    tipo: str,
    errore: str,
    sender: str,
    dest: list[tuple[str, str]],
    subject: str,
    when: datetime,
    dati: list[tuple[str, dict[str, str], str | None]],
) -> bytes:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f"<postacert tipo={quoteattr(tipo)} errore={quoteattr(errore)}>",
        "    <intestazione>",
        f"        <mittente>{escape(sender)}</mittente>",
    ]
    out += [
        f"        <destinatari tipo={quoteattr(tipo_)}>{escape(addr)}</destinatari>"
        for addr, tipo_ in dest
    ]
    out += [
        f"        <risposte>{escape(sender)}</risposte>",
        f"        <oggetto>{escape(subject)}</oggetto>",
        "    </intestazione>",
        "    <dati>",
    ]
    for tag, attrs, value in dati:
        attr_text = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
        if tag == "data":
            out += [
                f"        <data{attr_text}>",
                f"            <giorno>{when:%d/%m/%Y}</giorno>",
                f"            <ora>{when:%H:%M:%S}</ora>",
                "        </data>",
            ]
        elif value is None:
            out.append(f"        <{tag}{attr_text} />")
        else:
            out.append(f"        <{tag}{attr_text}>{escape(value)}</{tag}>")
    out += ["    </dati>", "</postacert>", ""]
    return "\n".join(out).encode("utf-8")


def _text_part(text: str, subtype: str) -> MIMEText:
    try:
        part = MIMEText(text, subtype, "iso-8859-1")
    except UnicodeEncodeError:
        part = MIMEText(text, subtype, "utf-8")
    part.add_header("Content-Disposition", "inline")
    return _bare(part)


def _alternative(text: str, html: str | None) -> Message:
    if html is None:
        return _text_part(text, "plain")
    alt = MIMEMultipart("alternative")
    alt.attach(_text_part(text, "plain"))
    alt.attach(_text_part(html, "html"))
    return _bare(alt)


def _xml_part(xml: bytes) -> MIMEApplication:
    part = MIMEApplication(xml, "xml", name="daticert.xml")
    part.add_header("Content-Disposition", "inline", filename="daticert.xml")
    return _bare(part)


def _attached_message(raw: bytes) -> MIMEMessage:
    part = MIMEMessage(message_from_bytes(raw, policy=compat32))
    part.add_header("Content-Disposition", "attachment", filename="postacert.eml")
    return _bare(part)


def _bare(part: _M) -> _M:
    """A body part as real receipts have it: MIME-Version only on the signed entity."""
    del part["MIME-Version"]
    return part


def _original(
    message_id: str, sender: str, dest: list[tuple[str, str]], subject: str, body: str
) -> bytes:
    msg = MIMEText(body, "plain", "utf-8")
    msg["From"] = sender
    msg["To"] = ", ".join(addr for addr, _ in dest)
    msg["Subject"] = subject
    msg["Message-ID"] = _bracketed(message_id)
    return _to_bytes(msg)


def _to_bytes(msg: Message) -> bytes:
    buf = io.BytesIO()
    BytesGenerator(buf, mangle_from_=False, policy=_CRLF).flatten(msg)
    return buf.getvalue()


def _header_line(name: str, value: str) -> bytes:
    if not value.isascii():
        value = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {value}\r\n".encode("ascii")


def _signed(headers: list[tuple[str, str]], inner: Message, *, opaque: bool = False) -> bytes:
    """Outer headers + S/MIME envelope around the exact bytes of ``inner``."""
    content = _to_bytes(inner)
    cert, key = signing_identity()
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, hashes.SHA256())
    head = b"".join(_header_line(name, value) for name, value in headers)
    head += b"MIME-Version: 1.0\r\n"
    if opaque:
        der = builder.sign(Encoding.DER, [pkcs7.PKCS7Options.Binary])
        return (
            head
            + b"Content-Type: application/pkcs7-mime; smime-type=signed-data;"
            + b' name="smime.p7m"\r\n'
            + b"Content-Transfer-Encoding: base64\r\n"
            + b'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
            + _b64(der)
        )
    der = builder.sign(
        Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    )
    boundary = ("----" + os.urandom(16).hex().upper()).encode("ascii")
    return (
        head
        + b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
        + b' micalg="sha-256"; boundary="'
        + boundary
        + b'"\r\n\r\nThis is an S/MIME signed message\r\n\r\n--'
        + boundary
        + b"\r\n"
        + content
        + b"\r\n--"
        + boundary
        + b'\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
        + _b64(der)
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def _b64(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"\r\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + b"\r\n"
