"""Read a PEC receipt: what happened, to which message, for which recipient.

A PEC provider answers every message its user sends with receipts (*ricevute*) delivered to
the sender's own PEC mailbox. Each one is an S/MIME signed message carrying the headers
``X-Ricevuta: <kind>`` and ``X-Riferimento-Message-ID: <original Message-ID>``, a text/HTML
part for people and a ``daticert.xml`` attachment for programs (``<postacert tipo=... errore=...>``
with ``<intestazione>`` and ``<dati>``).

:func:`parse_receipt` turns the raw bytes of one message into a :class:`PecReceipt`:

* The S/MIME envelope is unwrapped: ``multipart/signed`` -> its first part. An opaque-signed
  ``application/pkcs7-mime`` envelope is **not** unwrapped (reading the content out of the
  PKCS#7 SignedData needs an ASN.1 decoder and ``cryptography`` only loads its certificates):
  such a message is read from its outer headers only, with a warning saying so.
* The signature is **not verified** (out of scope here): a receipt says what the message
  claims, and trusting it is the caller's business (e.g. only reading the PEC mailbox the
  provider delivers to).
* The kind comes from daticert's ``tipo`` when there is a daticert, else from ``X-Ricevuta``;
  when both are there and disagree, daticert wins and a warning records the disagreement.
* ``reference`` (the original message's Message-ID) comes from ``X-Riferimento-Message-ID``,
  else from daticert's ``<msgid>``; it is always given in the ``<...>`` form, the form of the
  Message-ID header the engine writes (a disagreement between the two is a warning).
* Certified mail arriving for the user (``X-Trasporto: posta-certificata``) and anomaly
  envelopes (``X-Trasporto: errore``) are not receipts; neither is anything without a known
  receipt kind. ``reason`` says why a message is not a receipt.
* ``daticert.xml`` is parsed defensively: no DTD of any kind (``<!DOCTYPE``, ``<!ENTITY``,
  external entities) is accepted, checked on the bytes and again by the XML parser itself
  (so a declaration hidden behind another encoding is refused too), and the size is capped.
  A refused or malformed daticert makes the message *not a receipt*: its kind, recipient and
  error could not be trusted.

Stdlib only.
"""

from __future__ import annotations

import email
import email.policy
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import Message
from os import PathLike
from pathlib import Path
from typing import Any, NoReturn
from xml.parsers import expat

__all__ = [
    "EVENTS",
    "KINDS",
    "PecReceipt",
    "parse_files",
    "parse_receipt",
]

#: receipt kind (``X-Ricevuta`` / daticert ``tipo``) -> delivery event
EVENTS: dict[str, str] = {
    "accettazione": "pec_acceptance",
    "non-accettazione": "pec_error",
    "presa-in-carico": "pec_taken_in_charge",
    "avvenuta-consegna": "pec_delivery",
    "errore-consegna": "pec_error",
    "preavviso-errore-consegna": "pec_delivery_warning",
    "rilevazione-virus": "pec_error",
}
KINDS = frozenset(EVENTS)

#: a daticert is a few hundred bytes; anything past this is refused
MAX_DATICERT_BYTES = 256 * 1024
#: parts looked at while searching the daticert (a receipt has a handful)
_MAX_PARTS = 200

_SIGNED_OPAQUE = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_DTD_RE = re.compile(rb"<!\s*(doctype|entity|element|attlist|notation)", re.IGNORECASE)
_ZONE_RE = re.compile(r"^([+-])(\d{2}):?(\d{2})$")

# the fields parse_files yields, in order
_FILE_FIELDS = ("is_receipt", "kind", "event", "reference", "recipient", "error", "provider", "ts")


@dataclass
class PecReceipt:
    """What one message says as a PEC receipt.

    ``is_receipt`` False means the message is not (or cannot be trusted as) a receipt;
    ``reason`` then says why and the other fields may be empty.
    """

    is_receipt: bool
    kind: str | None = None
    event: str | None = None
    #: the original message's Message-ID, always in the ``<...>`` form
    reference: str | None = None
    #: daticert's ``<msgid>`` (``<...>`` form): the signed reference, which may differ from
    #: the ``X-Riferimento-Message-ID`` header (correlation tries the header, then this)
    daticert_msgid: str | None = None
    #: the receipt's own ``Message-ID`` header (``<...>`` form)
    message_id: str | None = None
    #: for delivery/error receipts the ``<consegna>`` address, else the single recipient
    recipient: str | None = None
    recipients: list[str] = field(default_factory=list)
    #: ``"<errore>: <errore-esteso>"`` (either alone when the other is missing); None if none
    error: str | None = None
    #: the ``errore`` attribute (``no-dest``, ``no-dominio``, ``virus``, ``altro``), never
    #: ``nessuno``
    error_code: str | None = None
    #: the ``<errore-esteso>`` text (e.g. ``5.1.1 - ...``)
    error_detail: str | None = None
    #: ``<gestore-emittente>``: the provider that issued the receipt
    provider: str | None = None
    #: ISO 8601 with the offset from ``<data zona=...>``
    ts: str | None = None
    identificativo: str | None = None
    #: ``<mittente>`` and ``<oggetto>`` of the original message
    sender: str | None = None
    subject: str | None = None
    #: ``<ricevuta tipo=...>``: completa, breve or sintetica (delivery receipts)
    receipt_type: str | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DaticertError(ValueError):
    """daticert.xml refused (DTD, too large) or not readable."""


def parse_receipt(raw: bytes) -> PecReceipt:
    """Read one message (its raw RFC 5322 bytes) as a PEC receipt. Never raises on bad input."""
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise TypeError(f"parse_receipt wants bytes, not {type(raw).__name__}")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    warnings: list[str] = []

    transport = _header(msg, "X-Trasporto")
    if transport:
        what = {"posta-certificata": "certified mail", "errore": "an anomaly envelope"}
        label = what.get(transport.lower(), "a PEC transport envelope")
        return PecReceipt(False, reason=f"X-Trasporto: {transport} ({label}), not a receipt")

    header_kind = (_header(msg, "X-Ricevuta") or "").lower() or None
    header_ref = _message_id(_header(msg, "X-Riferimento-Message-ID"))
    own_id = _message_id(_header(msg, "Message-ID"))

    content = _unwrap(msg, warnings)
    daticert_part = _find_daticert(content) if content is not None else None
    if header_kind is None and daticert_part is None:
        return PecReceipt(False, reason="no X-Ricevuta header and no daticert.xml")

    root: ET.Element | None = None
    if daticert_part is not None:
        try:
            root = _parse_daticert(_payload_bytes(daticert_part))
        except DaticertError as exc:
            return PecReceipt(False, reason=f"daticert.xml refused: {exc}", warnings=warnings)
    elif content is not None:
        warnings.append("no daticert.xml: fields from the headers only")

    dati = _Daticert(root) if root is not None else None
    kind = header_kind
    if dati is not None and dati.tipo:
        if header_kind and header_kind != dati.tipo:
            warnings.append(
                f"X-Ricevuta {header_kind!r} disagrees with daticert tipo {dati.tipo!r}: "
                "daticert wins"
            )
        kind = dati.tipo
        if header_kind is None and kind in KINDS:
            warnings.append("no X-Ricevuta header: kind from daticert tipo")
    elif dati is not None and header_kind is not None:
        warnings.append("daticert.xml has no tipo: kind from X-Ricevuta")
    if kind not in KINDS:
        return PecReceipt(
            False, kind=kind, reason=f"not a receipt kind: {kind!r}", warnings=warnings
        )

    if dati is None:
        return PecReceipt(
            True,
            kind=kind,
            event=EVENTS[kind],
            reference=header_ref,
            message_id=own_id,
            warnings=warnings,
        )

    if header_ref and dati.msgid and header_ref != dati.msgid:
        warnings.append(
            f"X-Riferimento-Message-ID {header_ref} disagrees with daticert msgid {dati.msgid}: "
            "the header is used"
        )
    if header_ref is None and dati.msgid:
        warnings.append("no X-Riferimento-Message-ID header: reference from daticert msgid")
    ts = dati.timestamp(warnings)
    recipient = dati.consegna or (dati.destinatari[0] if len(dati.destinatari) == 1 else None)
    return PecReceipt(
        True,
        kind=kind,
        event=EVENTS[kind],
        reference=header_ref or dati.msgid,
        daticert_msgid=dati.msgid,
        message_id=own_id,
        recipient=recipient,
        recipients=list(dati.destinatari),
        error=": ".join(x for x in (dati.error_code, dati.error_detail) if x) or None,
        error_code=dati.error_code,
        error_detail=dati.error_detail,
        provider=dati.gestore,
        ts=ts,
        identificativo=dati.identificativo,
        sender=dati.mittente,
        subject=dati.oggetto,
        receipt_type=dati.ricevuta,
        warnings=warnings,
    )


def parse_files(paths: Iterable[str | PathLike[str]]) -> Iterator[dict[str, Any]]:
    """One summary dict per file, in order (``mail-proxy pec parse FILE... --json``).

    Keys: ``file``, ``is_receipt``, ``kind``, ``event``, ``reference``, ``recipient``,
    ``error``, ``provider``, ``ts``, then ``reason`` and ``warnings``. A file that cannot be
    read raises ``OSError``.
    """
    for path in paths:
        receipt = parse_receipt(Path(path).read_bytes())
        row: dict[str, Any] = {"file": str(path)}
        row.update((name, getattr(receipt, name)) for name in _FILE_FIELDS)
        row["reason"] = receipt.reason
        row["warnings"] = list(receipt.warnings)
        yield row


# --- envelope ---------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _message_id(value: str | None) -> str | None:
    """``<id>`` whatever the brackets and whitespace around it; None when empty."""
    if not value:
        return None
    inner = "".join(value.split()).strip("<>")
    return f"<{inner}>" if inner else None


def _unwrap(msg: Message, warnings: list[str]) -> Message | None:
    """The signed content of an S/MIME envelope (None when it cannot be read)."""
    ctype = msg.get_content_type()
    if ctype == "multipart/signed":
        parts = msg.get_payload()
        if isinstance(parts, list) and parts and isinstance(parts[0], Message):
            return parts[0]
        warnings.append("multipart/signed without a readable first part")
        return None
    if ctype in _SIGNED_OPAQUE:
        warnings.append(
            f"opaque-signed envelope ({ctype}) not unwrapped: fields from the headers only"
        )
        return None
    warnings.append(f"not an S/MIME signed message ({ctype})")
    return msg


def _find_daticert(root: Message) -> Message | None:
    """The ``daticert.xml`` part, breadth first, not looking inside attached messages."""
    queue = [root]
    seen = 0
    while queue and seen < _MAX_PARTS:
        part = queue.pop(0)
        seen += 1
        if part.get_content_maintype() == "message":
            continue  # the original message attached to a receipt is not the receipt
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                queue.extend(p for p in payload if isinstance(p, Message))
            continue
        name = part.get_filename() or part.get_param("name")
        if isinstance(name, str) and name.strip().lower() == "daticert.xml":
            return part
    return None


def _payload_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    return payload.encode("utf-8", "replace") if isinstance(payload, str) else b""


# --- daticert.xml -----------------------------------------------------------------------


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def _parse_daticert(data: bytes) -> ET.Element:
    """The ``<postacert>`` element; DTDs, entity declarations and oversize input refused."""
    if len(data) > MAX_DATICERT_BYTES:
        raise DaticertError(f"larger than {MAX_DATICERT_BYTES} bytes")
    found = _DTD_RE.search(data)
    if found:
        decl = found.group(1).decode("ascii").upper()
        raise DaticertError(f"contains a <!{decl} declaration (DTDs and entities are refused)")

    def refuse(*_args: object) -> NoReturn:
        raise DaticertError("contains a DOCTYPE/ENTITY declaration (DTDs are refused)")

    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.buffer_text = True
    parser.StartElementHandler = lambda tag, attrs: builder.start(
        _local(tag), {_local(k): v for k, v in attrs.items()}
    )
    parser.EndElementHandler = lambda tag: builder.end(_local(tag))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        root = builder.close()
    except DaticertError:
        raise
    # ExpatError; LookupError/UnicodeError: an unknown or broken declared encoding
    except (expat.ExpatError, LookupError, ValueError) as exc:
        raise DaticertError(f"malformed XML ({exc})") from None
    if root.tag != "postacert":
        raise DaticertError(f"root element is <{root.tag}>, not <postacert>")
    return root


def _text(el: ET.Element | None) -> str | None:
    if el is None:
        return None
    text = " ".join("".join(el.itertext()).split())
    return text or None


class _Daticert:
    """The fields of one ``<postacert>`` element."""

    def __init__(self, root: ET.Element) -> None:
        self.tipo = (root.get("tipo") or "").strip().lower() or None
        errore = (root.get("errore") or "").strip()
        self.error_code = errore if errore and errore.lower() != "nessuno" else None
        self.mittente = _text(root.find(".//mittente"))
        self.destinatari = [t for t in map(_text, root.iterfind(".//destinatari")) if t]
        self.oggetto = _text(root.find(".//oggetto"))
        self.gestore = _text(root.find(".//gestore-emittente"))
        self.identificativo = _text(root.find(".//identificativo"))
        self.msgid = _message_id(_text(root.find(".//msgid")))
        ricevuta = root.find(".//ricevuta")
        self.ricevuta = (ricevuta.get("tipo") or None) if ricevuta is not None else None
        self.consegna = _text(root.find(".//consegna"))
        self.error_detail = _text(root.find(".//errore-esteso"))
        self._data = root.find(".//data")

    def timestamp(self, warnings: list[str]) -> str | None:
        """``<data zona="+0100"><giorno>dd/mm/yyyy</giorno><ora>hh:mm:ss</ora></data>``."""
        if self._data is None:
            warnings.append("daticert.xml has no <data>")
            return None
        day = _text(self._data.find("giorno"))
        hour = _text(self._data.find("ora"))
        when = None
        for fmt in ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M"):
            try:
                when = datetime.strptime(f"{day} {hour}", fmt)
                break
            except ValueError:
                continue
        if when is None:
            warnings.append(f"daticert <data> unreadable: giorno={day!r} ora={hour!r}")
            return None
        zone = (self._data.get("zona") or "").strip()
        found = _ZONE_RE.match(zone)
        if found:
            sign = -1 if found.group(1) == "-" else 1
            offset = timedelta(hours=int(found.group(2)), minutes=int(found.group(3)))
            if offset < timedelta(hours=24):
                return when.replace(tzinfo=timezone(sign * offset)).isoformat()
        warnings.append(f"daticert <data> zona {zone!r} unreadable: ts without offset")
        return when.isoformat()
