"""Addresses on the SMTP wire: the envelope form of an address and when SMTPUTF8 is needed.

The queue keeps addresses as the client wrote them (``user@bücher.de``, ``用户@例子.广告``).
On the wire:

* an internationalised domain becomes its A-label (``user@xn--bcher-kva.de``), which every
  server accepts: an ASCII local part never needs SMTPUTF8, whatever the domain;
* a UTF-8 local part cannot be converted: it needs a server that offers SMTPUTF8 (RFC 6531),
  and the message headers are then sent as UTF-8 too;
* the MIME builder already writes domains as A-labels in the headers, so a header needs
  SMTPUTF8 only when one of its addresses has a UTF-8 local part
  (:func:`headers_need_smtputf8`); this matters for an address that is not in the envelope
  (``From`` with a separate ``return_path``, ``Reply-To``), whose header would otherwise be
  sent with an encoded word in place of the local part.

The transport decides with :func:`envelope_address` for the sender and each recipient and
:func:`headers_need_smtputf8` for the message, and refuses the message permanently when
SMTPUTF8 is needed and the server does not offer it.
"""

from __future__ import annotations

from email.headerregistry import AddressHeader
from email.message import EmailMessage
from email.utils import getaddresses

from mail_proxy.core.contracts.errors import MessageContentError
from mail_proxy.core.engine.idn import DomainError, ascii_domain

#: Headers whose addresses are shown to the recipient (Bcc is never sent).
ADDRESS_HEADERS = ("From", "Sender", "To", "Cc", "Reply-To")
_ADDRESS_HEADERS_LOWER = frozenset(h.lower() for h in ADDRESS_HEADERS)


def envelope_address(addr: str) -> tuple[str, bool]:
    """``(wire form, needs SMTPUTF8)`` of one envelope address (``MAIL FROM``/``RCPT TO``).

    The domain is converted to A-labels when it is not ASCII; the local part is kept as is,
    and SMTPUTF8 is needed exactly when it is not ASCII. The null sender ``""`` stays ``""``.
    Raises :class:`~mail_proxy.core.contracts.errors.MessageContentError` (a permanent
    failure of the message) for an address without ``@`` or with an invalid domain.
    """
    if not addr:
        return "", False
    if addr.isascii():
        return addr, False  # the common case: nothing to convert (domains checked at enqueue)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise MessageContentError(f"address {addr!r} has no domain")
    try:
        wire_domain = ascii_domain(domain)
    except DomainError as exc:
        raise MessageContentError(f"address {addr!r}: {exc}") from None
    return f"{local}@{wire_domain}", not local.isascii()


def headers_need_smtputf8(message: EmailMessage) -> bool:
    """True when an address header of ``message`` holds an address that is not ASCII (a UTF-8
    local part: the builder writes domains as A-labels).

    Reads the stored values (``raw_items``) and parses only a header that is not ASCII:
    ``get_all`` would parse every address header again (~100 µs a message)."""
    wanted = _ADDRESS_HEADERS_LOWER
    for name, value in message.raw_items():
        if name.lower() not in wanted:
            continue
        text = str(value)
        if text.isascii():
            continue
        if isinstance(value, AddressHeader):
            specs = [address.addr_spec for address in value.addresses]
        else:
            specs = [addr for _name, addr in getaddresses([text])]
        if not all(spec.isascii() for spec in specs):
            return True
    return False
