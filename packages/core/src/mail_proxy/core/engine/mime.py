"""Build the MIME message and the SMTP envelope of a queued message.

The dispatcher calls :func:`build_email` on every delivery attempt with the stored payload
(the fields of API.md "Message") and the attachments its fetchers returned, then
:func:`envelope` for the envelope sender and recipients. Both run on the hot path, so they do
the minimum: one pass over the fields, no DNS lookups (:func:`new_message_id` does not call
``getfqdn``), and the MIME type table is loaded once at import.

Rules (see API.md):

* ``Message-ID`` is the id the engine generated once at enqueue, so every retry of one message
  carries the same id and a duplicate delivery can be recognised.
* ``X-Genro-Mail-ID`` always carries the client's message id (correlating what comes back, e.g. delivery notices).
* ``Bcc`` never appears in the headers: bcc recipients exist only in the envelope.
* ``Return-Path`` is the envelope sender, never a header (the receiving MTA writes it).
* ``body`` + ``body_html`` → ``multipart/alternative``; attachments → ``multipart/mixed``.
* Every header field, address and file name was validated at enqueue; the characters that
  break a header line (:data:`LINE_BREAKING`) are refused again here, with a
  :class:`MimeError` (a :class:`MessageContentError`: the message fails for good, at once).
  Extra headers that would replace a structural header (``RESERVED_HEADERS``) are ignored:
  the message fields win, so no ``headers`` entry can inject a ``Bcc`` or a second ``From``.
* Internationalised domains in ``From``/``To``/``Cc``/``Reply-To`` are written as A-labels
  (``user@xn--bcher-kva.de``), readable by any server; a UTF-8 local part stays UTF-8 (it
  needs SMTPUTF8 whatever the domain). The envelope keeps the addresses as stored: the
  transport converts them (``mail_proxy.ce.transport.addresses``).
"""

from __future__ import annotations

import base64
import functools
import itertools
import mimetypes
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy
from email.utils import format_datetime, getaddresses
from typing import Any, cast

from mail_proxy.core.contracts.errors import MessageContentError
from mail_proxy.core.engine.idn import DomainError, ascii_domain


class _CachedHeaderRegistry(HeaderRegistry):
    """The stdlib header factory, but building each header class once, and parsing each
    common MIME structure header once.

    ``HeaderRegistry.__getitem__`` creates a new class with ``type()`` on every header it
    makes; the classes are stateless, so one per header name is enough. And ``set_content``
    stores its ``Content-Type``, ``Content-Transfer-Encoding`` and ``MIME-Version`` through
    the header parser, most of a message's build time, with the same few values on every
    message (``text/plain; charset="utf-8"``, ``7bit``, ``1.0``): the parsed headers are
    immutable, so one parsed object per value is shared (a bounded table; a multipart
    ``Content-Type`` with its unique boundary is longer than :data:`SHARED_MAX_LENGTH` or
    simply misses).
    """

    SHARED = frozenset({"content-type", "content-transfer-encoding", "mime-version"})
    SHARED_MAX_LENGTH = 64
    SHARED_MAX_ENTRIES = 256

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}
        self._shared: dict[tuple[str, str], BaseHeader] = {}

    @classmethod
    def is_shared(cls, name: str, value: Any) -> bool:
        """Whether ``name: value`` is one of the common MIME structure headers kept once."""
        return (
            isinstance(value, str)
            and len(value) <= cls.SHARED_MAX_LENGTH
            and name.lower() in cls.SHARED
        )

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if not self.is_shared(name, value):
            return super().__call__(name, value)
        key = (name, value)
        header = self._shared.get(key)
        if header is None:
            if len(self._shared) >= self.SHARED_MAX_ENTRIES:
                self._shared.clear()
            header = self._shared[key] = super().__call__(name, value)
        return header

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


class _Policy(EmailPolicy):
    """``EmailPolicy`` that remembers how the common MIME structure headers fold.

    Writing a message folds every header; for the parsed ``Content-Type``,
    ``Content-Transfer-Encoding`` and ``MIME-Version`` that means walking their parse tree
    each time, for the same few values on every message. The folded bytes depend only on the
    name, the value, whether it is parsed or raw text, and the policy's output settings, so
    they are kept in a bounded table under exactly that key.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        if not _CachedHeaderRegistry.is_shared(name, value):
            return super().fold_binary(name, value)
        key = (
            name,
            str(value),
            hasattr(value, "name"),  # parsed header or raw text: folded differently
            self.linesep,
            self.max_line_length,
            self.utf8,
            self.cte_type,
            self.refold_source,
        )
        folded = _FOLDED.get(key)
        if folded is None:
            if len(_FOLDED) >= _CachedHeaderRegistry.SHARED_MAX_ENTRIES:
                _FOLDED.clear()
            folded = _FOLDED[key] = super().fold_binary(name, value)
        return folded


_FOLDED: dict[tuple[Any, ...], bytes] = {}

#: Policy of every built message: ``email.policy.SMTP`` (CRLF line ends, RFC-compliant
#: folding, 8bit bodies when needed — the SMTP client re-encodes them for servers without
#: 8BITMIME) with the caching header factory.
POLICY = _Policy(linesep="\r\n", header_factory=_CachedHeaderRegistry())


@functools.lru_cache(maxsize=2)
def _date_header(second: int) -> str:
    """The ``Date`` header of messages built during ``second`` (one formatting a second)."""
    return format_datetime(datetime.fromtimestamp(second, timezone.utc))


#: Extra header names (lower case) the ``headers`` field may not set; see the module doc.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "resent-bcc",
        "subject",
        "reply-to",
        "return-path",
        "message-id",
        "x-genro-mail-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)

MAIL_ID_HEADER = "X-Genro-Mail-ID"
DEFAULT_MIME_TYPE = "application/octet-stream"
FALLBACK_DOMAIN = "genro-mail-proxy.invalid"

#: Characters that end a header line somewhere on the way: every C0 control except TAB, DEL,
#: NEL (U+0085) and the Unicode line and paragraph separators. CR and LF are line ends on the
#: wire; the others are line ends for ``str.splitlines`` (the stdlib email package refolds a
#: header with them into real line breaks) and for many parsers and MUAs. NUL truncates.
LINE_BREAKING = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
#: The same plus TAB, for values that have no reason to hold one (ids, file names, codes).
LINE_BREAKING_OR_TAB = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_SEPARATOR_NAMES = {"\u2028": "line separator", "\u2029": "paragraph separator"}
#: A UTF-16 surrogate on its own is not a character: it cannot be encoded (UTF-8 or any other).
SURROGATE = re.compile("[\ud800-\udfff]")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII except ':' (RFC 5322 ftext)
_MIME_TOKEN = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")
_DOMAIN_OK = re.compile(r"^[A-Za-z0-9.-]+$")

if not mimetypes.inited:  # load the system table now, not inside the event loop later
    mimetypes.init()


class MimeError(MessageContentError):
    """The payload cannot become a valid message; ``code`` is a stable snake_case reason.

    A message that reaches this point passed enqueue validation, so this is a permanent
    failure of the message (retrying cannot help).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Attachment:
    """One fetched attachment: final file name, exact content, MIME type if the client gave it."""

    filename: str
    content: bytes
    mime_type: str | None = None


def character_problem(text: str, field: str, *, tab: bool = True) -> str | None:
    """Why ``text`` may not go into a header (or an envelope address, or a file name), or None.

    The reason names the field and the first offending character, e.g.
    ``subject: control character U+000B is not allowed``. With ``tab=False`` TAB is refused
    too. The enqueue validation uses the same check and words, so a message is refused there
    with the reason it would fail with here.
    """
    found = (LINE_BREAKING if tab else LINE_BREAKING_OR_TAB).search(text)
    if found is None:
        lone = SURROGATE.search(text)
        return None if lone is None else f"{field}: lone surrogate U+{ord(lone.group()):04X}"
    char = found.group()
    kind = _SEPARATOR_NAMES.get(char, "control character")
    return f"{field}: {kind} U+{ord(char):04X} is not allowed"


def _clean(value: Any, field: str, *, tab: bool = True) -> str:
    """``value`` as a header-safe string; line-breaking characters are refused."""
    text = value if isinstance(value, str) else str(value)
    problem = character_problem(text, field, tab=tab)
    if problem is not None:
        raise MimeError("invalid_header", problem)
    return text


def _address_list(value: Any) -> list[str]:
    """The ``to``/``cc``/``bcc`` field as a list of address strings (list or comma string)."""
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value if item]


def _joined(value: Any, field: str) -> str:
    """An address field as one header value (``a@x, "B" <b@y>``), domains as A-labels."""
    return ", ".join(_header_mailboxes(_clean(item, field), field) for item in _address_list(value))


def _header_mailboxes(text: str, field: str) -> str:
    """``text`` (one or more mailboxes) with every non-ASCII domain written as A-labels.

    ``text`` is returned as is when every domain is ASCII (without parsing when the whole
    text is); otherwise the mailboxes are rebuilt, display names quoted (always valid).
    """
    if text.isascii():
        return text
    pairs = getaddresses([text])
    if all(addr.rpartition("@")[2].isascii() for _name, addr in pairs):
        return text
    rebuilt = []
    for name, addr in pairs:
        local, at, domain = addr.rpartition("@")
        if not at or not local:
            raise MimeError("invalid_address", f"{field}: not a valid address list")
        if not domain.isascii():
            try:
                addr = f"{local}@{ascii_domain(domain)}"
            except DomainError as exc:
                raise MimeError("invalid_address", f"{field}: {exc}") from None
        if name:
            quoted = name.replace("\\", "\\\\").replace('"', '\\"')
            rebuilt.append(f'"{quoted}" <{addr}>')
        else:
            rebuilt.append(addr)
    return ", ".join(rebuilt)


#: One mailbox in the plain forms the intake writes (``a@example.com``, ``Name <a@x.org>``):
#: a dot-atom local part, a plain domain, an optional display name without quotes, commas,
#: comments or other specials. Anything else goes through ``email.utils.getaddresses``.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_ADDR = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_MAILBOX = re.compile(
    rf"\s*(?:({_PLAIN_ADDR})|[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~. -]*<({_PLAIN_ADDR})>)\s*"
)


def addresses(value: Any) -> list[str]:
    """The bare addresses (addr-spec) in an address field, in order, empties dropped.

    A mailbox in one of the plain forms is read with one regular expression; the others
    (quoted names, comments, groups, several mailboxes in one string, non-ASCII) are parsed
    by ``email.utils.getaddresses``, which gives the same answer for the plain forms at
    twenty times the cost (this runs for every message at delivery).
    """
    found: list[str] = []
    for item in _address_list(value):
        plain = _PLAIN_MAILBOX.fullmatch(item)
        if plain is not None:
            found.append(plain.group(1) or plain.group(2))
        else:
            found.extend(addr for _name, addr in getaddresses([item]) if addr)
    return found


def new_message_id(from_addr: str) -> str:
    """A fresh ``<unique@domain>`` Message-ID, the domain taken from the From address.

    Unique: a random per-process prefix (64 bits) plus a counter — no system call per message
    (this runs for every message at enqueue).
    """
    return f"<{_ID_PREFIX}.{next(_ID_COUNTER):x}@{_message_id_domain(from_addr)}>"


_ID_PREFIX = f"{int(time.time()):x}.{os.urandom(8).hex()}"
_ID_COUNTER = itertools.count(1)


@functools.lru_cache(maxsize=4096)
def _message_id_domain(from_addr: str) -> str:
    """The Message-ID domain for a From value (senders repeat: cached)."""
    found = addresses(from_addr)
    domain = ""
    if found and "@" in found[0]:
        domain = found[0].rpartition("@")[2].strip().lower()
    if domain and not _DOMAIN_OK.match(domain):
        try:
            domain = ascii_domain(domain)
        except DomainError:
            domain = ""
    if not domain or "@" in domain or not _DOMAIN_OK.match(domain):
        domain = FALLBACK_DOMAIN
    return domain


def _message_id_header(message_id: str) -> str:
    text = _clean(message_id, "message_id").strip()
    if not text:
        raise MimeError("invalid_message_id", "message_id is empty")
    if not text.startswith("<"):
        text = f"<{text}>"
    return text


def _put(msg: EmailMessage, name: str, value: str) -> None:
    """Add a header whose value was already checked for line-breaking characters.

    A pure-ASCII value is stored as text with ``set_raw`` (the parser's own way in), which
    is exactly the state of a message parsed from bytes: the generator writes it as is,
    refolding it only when too long, and reading it parses it on demand. That skips the
    header parser on the hot path, where it costs more than the rest of the build. Non-ASCII
    values go through the policy, which encodes them (RFC 2047 encoded words); a value the
    policy refuses is a fault of the message (:class:`MimeError`), not of the service.
    """
    if value.isascii():
        msg.set_raw(name, value)
        return
    try:
        msg[name] = value
    except ValueError as exc:
        raise MimeError("invalid_header", f"{name}: {exc}") from None


def _split_mime_type(mime_type: str | None, filename: str) -> tuple[str, str]:
    """``(maintype, subtype)`` from the given type, else guessed from the file name."""
    chosen = (mime_type or "").split(";", 1)[0].strip().lower()
    if not _MIME_TOKEN.match(chosen):
        guessed, _encoding = mimetypes.guess_type(filename, strict=False)
        chosen = guessed or DEFAULT_MIME_TYPE
    maintype, _, subtype = chosen.partition("/")
    # message/* and multipart/* parts may not be base64-encoded (RFC 2046): ship them opaque.
    if maintype in ("message", "multipart"):
        return "application", "octet-stream"
    return maintype, subtype


def _body_parts(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(plain, html)`` texts: ``body`` is plain unless ``content_type`` is html."""
    body = payload.get("body")
    html = payload.get("body_html")
    if payload.get("content_type") == "html":
        # body is HTML; an explicit body_html takes its place.
        return None, html if html is not None else (body or "")
    return body, html


def build_email(
    payload: dict[str, Any],
    *,
    message_id: str,
    mail_id: str,
    attachments: Iterable[Attachment] = (),
) -> EmailMessage:
    """Build the ``EmailMessage`` of one stored message (see the module doc for the rules).

    Raises :class:`MimeError` for content that cannot be sent (a line-breaking character in a
    header, an address or a file name, an invalid domain, an empty Message-ID).
    """
    msg = EmailMessage(policy=POLICY)
    # bcc and return_path only reach the envelope (MAIL FROM / RCPT TO): checked all the same
    _joined(payload.get("bcc"), "bcc")
    _clean(payload.get("return_path") or "", "return_path")
    _put(msg, "From", _header_mailboxes(_clean(payload.get("from") or "", "from"), "from"))
    to = _joined(payload.get("to"), "to")
    if to:
        _put(msg, "To", to)
    cc = _joined(payload.get("cc"), "cc")
    if cc:
        _put(msg, "Cc", cc)
    reply_to = payload.get("reply_to")
    if reply_to:
        _put(msg, "Reply-To", _joined(reply_to, "reply_to"))
    _put(msg, "Subject", _clean(payload.get("subject") or "", "subject"))

    seen: set[str] = set()
    extra = payload.get("headers") or {}
    for name, value in extra.items():
        name = _clean(name, "header name", tab=False)
        if not _HEADER_NAME.match(name):
            raise MimeError("invalid_header", f"header name {name!r} is not valid")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered in seen:
            continue
        seen.add(lowered)
        _put(msg, name, _clean(value, f"header {name}"))
    if "date" not in seen:
        _put(msg, "Date", _date_header(int(time.time())))
    _put(msg, "Message-ID", _message_id_header(message_id))
    _put(msg, MAIL_ID_HEADER, _clean(mail_id, "id", tab=False))

    plain, html = _body_parts(payload)
    for text, field in ((plain, "body"), (html, "body_html")):
        lone = SURROGATE.search(text) if isinstance(text, str) else None
        if lone is not None:
            raise MimeError("invalid_unicode", f"{field}: lone surrogate U+{ord(lone.group()):04X}")
    if plain is not None:
        msg.set_content(plain)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content("")

    for item in attachments:
        if msg.get_content_type() != "multipart/mixed":
            msg.make_mixed()
        msg.attach(cast(EmailMessage, _attachment_part(item)))  # (the stubs want EmailMessage)
    return msg


def _attachment_part(item: Attachment) -> MIMEPart:
    """One ``Content-Disposition: attachment`` part, base64-encoded.

    The stdlib's ``add_attachment`` encodes line by line into a list of small strings (about
    twice the size of the text) before joining them; here the content is encoded in slices of
    whole lines, so a large attachment costs its base64 text plus one slice.
    """
    filename = _clean(item.filename, "attachment filename", tab=False)
    maintype, subtype = _split_mime_type(item.mime_type, filename)
    part = MIMEPart(policy=POLICY)
    # The content manager writes the headers (RFC 2231 file names included) ...
    part.set_content(
        b"",
        maintype=maintype,
        subtype=subtype,
        disposition="attachment",
        filename=filename or None,
    )
    # ... and the payload is the base64 text, with the LF line ends the generator expects.
    part.set_payload(base64_text(item.content))
    return part


#: Raw bytes per encoded slice: a multiple of 57 (one 76-character base64 line).
_B64_SLICE = 57 * 16384


def base64_text(data: bytes) -> str:
    """``data`` as base64 lines of 76 characters, each ending with LF."""
    view = memoryview(data)
    return "".join(
        base64.encodebytes(view[i : i + _B64_SLICE]).decode("ascii")
        for i in range(0, len(data), _B64_SLICE)
    )


def envelope(payload: dict[str, Any]) -> tuple[str, list[str]]:
    """``(sender, recipients)`` of the SMTP envelope.

    The sender is ``return_path`` if given, else the From address (addr-spec only). The
    recipients are to + cc + bcc, deduplicated case-insensitively, first spelling and order
    kept.
    """
    found = addresses(payload.get("return_path") or payload.get("from") or "")
    sender = found[0] if found else ""
    seen: set[str] = set()
    recipients: list[str] = []
    for field in ("to", "cc", "bcc"):
        for addr in addresses(payload.get(field)):
            key = addr.lower()
            if key not in seen:
                seen.add(key)
                recipients.append(addr)
    return sender, recipients
