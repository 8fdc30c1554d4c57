"""Strict parsing of RFC 5322 mailboxes for the message validator.

``email.utils.getaddresses`` is lenient: ``"a@b.com <c@d.com>"`` becomes two addresses and
``"x <a@b.com"`` is accepted. Here every mailbox must be exactly one of ``addr``, ``<addr>`` or
``display name <addr>``; the addr-spec is ``local@domain`` where (RFC 5321, RFC 6531):

* the local part is a dot-atom, its characters ASCII ``atext`` or any non-ASCII character
  that is not a space or a control (``用户``, ``müller``), or a quoted string
  (``"john doe"``; only ``\\`` and ``\"`` may be escaped, so the form is canonical); at most
  64 octets in UTF-8;
* the domain is a hostname, ASCII (``xn--`` labels must be valid A-labels) or
  internationalised (IDNA 2008, :func:`mail_proxy.core.engine.idn.ascii_domain`); IP literals
  are refused; at most 254 octets for the whole address in its wire form (A-label domain).

Line-breaking and other control characters are refused anywhere (header injection).
Comma-separated strings are split outside quoted strings and angle brackets first.

The normalised form of a mailbox is ``addr`` or ``"Display Name" <addr>`` (quoted only when
the name needs it), which the MIME builder (:mod:`mail_proxy.core.engine.mime`) reads back with
``getaddresses``.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

from mail_proxy.core.engine.idn import DomainError, ascii_domain
from mail_proxy.core.engine.mime import LINE_BREAKING_OR_TAB

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: The common case, checked first: ASCII dot-atom local part, hostname labels.
_ADDR_SPEC = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*$")
#: A dot-atom local part with RFC 6531 UTF-8 characters (no spaces, no controls, no
#: surrogates, none of the ASCII specials).
_UTF8_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\xa0\s\ud800-\udfff])+"
_UTF8_DOT_ATOM = re.compile(rf"^{_UTF8_ATEXT}(?:\.{_UTF8_ATEXT})*$")
#: A quoted local part: printable ASCII but ``"`` and ``\``, non-ASCII but controls, spaces
#: other than U+0020 and surrogates; ``\"`` and ``\\`` escaped (the canonical form, which
#: ``getaddresses`` gives back unchanged).
_QUOTED_LOCAL = re.compile(
    r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]|[^\x00-\xa0\s\ud800-\udfff])+"$'
)
MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
#: CR, LF and NUL: the characters that split or truncate a header on the wire (injection).
INJECTION = re.compile(r"[\r\n\x00]")
#: Control characters (C0, DEL, NEL) and the Unicode line/paragraph separators: never valid
#: inside an address or display name.
_CONTROL = LINE_BREAKING_OR_TAB
_NEEDS_QUOTES = re.compile(r'[()<>\[\]:;@\\,."]')
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
#: ``Plain Name <addr>``: a name without specials, dots, quotes or control characters.
_SIMPLE_NAMED = re.compile(r'^((?:[^\s\x00-\x1f\x7f()<>\[\]:;@\\,."]| )*?) *<([^<>\s]+)>$')


class AddressError(ValueError):
    """A mailbox that is not acceptable. ``injection`` is True for CR/LF/NUL."""

    def __init__(self, text: str, injection: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.injection = injection


def is_addr_spec(addr: str) -> bool:
    """True for a ``local@domain`` address as described in the module doc, within the RFC
    5321 length limits."""
    if len(addr) <= MAX_ADDRESS_OCTETS and _ADDR_SPEC.match(addr) and "xn--" not in addr.lower():
        return len(addr.rpartition("@")[0]) <= MAX_LOCAL_OCTETS  # the common case
    local, at, domain = addr.rpartition("@")
    if not at or not (_UTF8_DOT_ATOM.match(local) or _QUOTED_LOCAL.match(local)):
        return False
    try:
        wire_domain = ascii_domain(domain)
    except DomainError:
        return False
    local_octets = len(local.encode("utf-8"))
    return (
        local_octets <= MAX_LOCAL_OCTETS
        and local_octets + 1 + len(wire_domain) <= MAX_ADDRESS_OCTETS
    )


def _quote_name(name: str) -> str:
    if not _NEEDS_QUOTES.search(name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def parse_mailbox(text: str) -> tuple[str, str]:
    """``(display name, addr-spec)`` of one mailbox, or :class:`AddressError`.

    The common shapes (``addr``, ``Plain Name <addr>``) are matched by one regex; anything
    else (quoted names, comments...) goes through ``getaddresses`` and the strict checks of
    :func:`parse_general`, which gives the same answer for the common shapes.
    """
    if INJECTION.search(text):
        raise AddressError(text, injection=True)
    piece = text.strip()
    if is_addr_spec(piece):
        return "", piece
    found = _SIMPLE_NAMED.match(piece)
    if found and is_addr_spec(found.group(2)):
        return " ".join(part for part in found.group(1).split(" ") if part), found.group(2)
    return parse_general(text)


def parse_general(text: str) -> tuple[str, str]:
    """:func:`parse_mailbox` without the fast path (``getaddresses`` + strict checks)."""
    if INJECTION.search(text):
        raise AddressError(text, injection=True)
    piece = text.strip()
    if not piece or _CONTROL.search(piece):
        raise AddressError(text)
    pairs = getaddresses([piece])
    if len(pairs) != 1:
        raise AddressError(text)
    name, addr = pairs[0]
    if not is_addr_spec(addr):
        raise AddressError(text)
    # The whole piece must be the address itself or end with "<addr>": refuses trailing
    # junk and unterminated brackets that getaddresses silently repairs.
    if piece not in (addr, f"<{addr}>"):
        suffix = f"<{addr}>"  # (a quoted local part may hold "<" itself)
        bare_head = _QUOTED.sub("", piece[: -len(suffix)])
        if not piece.endswith(suffix) or "<" in bare_head or ">" in bare_head:
            raise AddressError(text)
    return name.strip(), addr


def format_mailbox(name: str, addr: str) -> str:
    """The normalised mailbox string."""
    return f"{_quote_name(name)} <{addr}>" if name else addr


def normalise_mailbox(text: str) -> str:
    return format_mailbox(*parse_mailbox(text))


def split_address_list(text: str) -> list[str]:
    """Split a comma-separated address string outside quotes and angle brackets.

    Empty pieces (``"a@x,, b@y,"``) are dropped.
    """
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(0, depth - 1)
        elif char == "," and not quoted and depth == 0:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return [piece for piece in pieces if piece.strip()]


def normalise_address_list(value: str | list[str]) -> list[str]:
    """A ``to``/``cc``/``bcc`` value (list or comma string) as normalised mailboxes.

    Raises :class:`AddressError` naming the first bad entry. In a list every element must
    be exactly one mailbox (an empty element is an error).
    """
    if isinstance(value, str):
        if INJECTION.search(value):
            raise AddressError(value, injection=True)
        items = split_address_list(value)
    else:
        items = value
    return [normalise_mailbox(item) for item in items]
