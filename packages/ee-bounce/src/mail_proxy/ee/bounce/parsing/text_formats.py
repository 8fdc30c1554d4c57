"""The human-text bounce formats: qmail, Exim, Sendmail, Postfix, Exchange, Gmail, Yahoo, ...

Rather than one parser per mail system, this reads the notice the way a person does, with
rules that hold across all of them:

1. **The notice ends where the original message starts.** Every format marks that place,
   with a line such as ``--- Below this line is a copy of the message.`` (qmail),
   ``------ This is a copy of the message, including all the headers. ------`` (Exim),
   ``----- Original message -----`` (Gmail), ``Original message headers:`` (Exchange),
   ``----- Unsent message follows -----`` (Sendmail) — or simply with the original's
   ``Received:``/``Return-Path:`` header lines. Text after it is never searched for
   recipients (it is full of addresses that are not).
2. **A failed recipient is an address in a recipient position**: alone at the start of a
   line, possibly bracketed, quoted, bulleted or followed by ``:`` (``<a@b>:`` qmail,
   Postfix, Yahoo; indented ``a@b`` Exim, Gmail; ``a@b: reason`` OpenSMTPD; ``a@b on <date>``
   Exchange 2003), after a recipient label (``Recipient address:``, ``RCPT TO:``,
   ``Unknown user:``, ``could not be delivered to:``, ``rejected recipient``), or after a bare
   SMTP reply code (Sendmail transcripts: ``550 5.1.1 <a@b>... User unknown``). Addresses in
   the middle of a sentence are not recipients (``MAIL FROM:<sender>``, ``please contact
   <support@...>``), and the caller passes the addresses known to be the sender's, which are
   always skipped.
3. **What the notice says about a recipient is its line and the text that follows**, up
   to the next recipient. When that stretch holds nothing recognisable (the reason was
   written *before* the address, as MailMarshal and Notes do), the classifier falls back to
   the notice.
"""

from __future__ import annotations

import re

from .dsn import unquote
from .mime import find_emails
from .model import Finding

_MARKER = re.compile(
    r"""^(?:
        (?:the\s+)?(?:original|returned|unsent|bounced|undelivered|attached)\s+
            (?:message|mail|e-?mail)(?:\s+headers?)?
            (?:\s+(?:follows?|is\s+following|as\s+follows|info(?:rmation)?|below|attached))?
      | (?:this\s+is\s+a\s+|below\s+(?:this\s+line\s+)?is\s+a\s+|enclosed\s+is\s+a\s+
            |included\s+is\s+a\s+|here\s+is\s+a\s+)?copy\s+of\s+(?:the\s+|your\s+)?
            (?:original\s+)?(?:message|mail|e-?mail)\b.*
      | (?:the\s+)?(?:message\s+)?headers?\s+(?:of\s+the\s+original\s+message\s+)?
            (?:follows?|is\s+following|are\s+following)\b.*
      | the\s+header\s+of\s+the\s+original\s+message.*
      | below\s+is\s+a\s+copy\s+of.*
    )$""",
    re.X,
)
_HEADER_START = re.compile(
    r"^(?:Received|Return-Path|DKIM-Signature|X-Received|ARC-Seal|ARC-Message-Signature|"
    r"Authentication-Results|X-Google-Smtp-Source)\s*:",
    re.I,
)

_LEADING = re.compile(r"^[\s<\"'*>\-\[(•·]*(?:\d{1,3}[.)]\s+)?[\s<\"'(]*$")
_LABEL = re.compile(
    r"(?:recipient(?:\s+address)?|recipients?\s+were\s+affected|rcpt\s+to|addressed\s+to"
    r"|unknown\s+(?:user|recipient)|(?:deliver(?:ed|ing)?|sen[dt]|sending|transmit\w*)"
    r"(?:\s+\w+){0,3}\s+to|message\s+to|mail\s+address|attempts|failed\s+recipients?"
    r"|generated\s+by|delivery\s+to|\buser|\bmailbox|destinataire|empf[äa]nger|destinatario)"
    r"\s*[:=]?\s*[<(\"']*\s*$",
    re.I,
)
_SMTP_PREFIX = re.compile(r"^\s*(?:<<<\s*)?[45]\d\d[ -](?:\s*[45]\.\d{1,3}\.\d{1,3}\s+)?\s*<?$")
_MAILTO = re.compile(r"^\s*[^<>@\n]{0,80}<mailto:$", re.I)


def notice_text(texts: list[str]) -> str:
    """The human-readable notice: the text parts, each cut where the original begins."""
    pieces = []
    for text in texts:
        text = unquote(text)
        pieces.append(cut_original(text))
    return "\n\n".join(p for p in pieces if p.strip())


def cut_original(text: str) -> str:
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if index and _HEADER_START.match(line):
            return "\n".join(lines[:index])
        stripped = line.strip().strip("-=*#_~ \t").strip().rstrip(".:").strip().lower()
        if stripped and len(stripped) < 90 and _MARKER.match(stripped):
            return "\n".join(lines[:index])
    return text


def is_anchor(prefix: str, after_addresses_only: bool = False) -> bool:
    """Whether an address preceded by ``prefix`` (on its line) stands in a recipient place.

    ``after_addresses_only``: the line before it holds nothing but punctuation and other
    addresses (``a@x, b@y: reason`` names both).
    """
    return bool(
        after_addresses_only
        or _LEADING.match(prefix)
        or _LABEL.search(prefix[-200:])
        or (len(prefix) < 40 and _SMTP_PREFIX.match(prefix))
        or (len(prefix) < 120 and _MAILTO.match(prefix))
    )


#: More recipients than this in one notice is not a bounce worth reading further.
MAX_RECIPIENTS = 500
#: How much text after a recipient is kept as what the notice says about it.
SEGMENT_LIMIT = 4000


def find_recipients(
    notice: str, exclude: set[str], never: frozenset[str] | set[str] = frozenset()
) -> list[Finding]:
    """The recipients named in recipient positions of ``notice``, each with its text.

    Addresses in ``never`` (the reporting system's own) are skipped; those in ``exclude``
    (the sender side: the bounce's To, the original's From...) are skipped unless nothing
    else is left — some systems copy the failed address into the bounce's own headers.
    """
    anchors: list[tuple[int, int, int, str]] = []  # (line start, address end, line no, addr)
    offset = 0
    for number, line in enumerate(notice.splitlines(keepends=True)):
        listed, last = True, 0
        for begin, end, email in find_emails(line):
            gap = re.sub(r"[,;]", " ", line[last:begin])
            listed = listed and bool(_LEADING.match(gap))
            last = end
            address = email.strip(".").lower()
            if address in never or not is_anchor(line[:begin], listed):
                continue
            anchors.append((offset, offset + end, number, address))
        offset += len(line)
    if any(anchor[3] not in exclude for anchor in anchors):
        anchors = [anchor for anchor in anchors if anchor[3] not in exclude]
    kept = list(dict.fromkeys(anchor[3] for anchor in anchors))[:MAX_RECIPIENTS]
    if len(kept) == MAX_RECIPIENTS:
        anchors = [anchor for anchor in anchors if anchor[3] in set(kept)]
    stops = _stops(anchors, len(notice))
    found: dict[str, Finding] = {}
    for index, (start, _end, _line, address) in enumerate(anchors):
        segment = notice[start : stops[index]][:SEGMENT_LIMIT].strip()
        if address not in found:
            found[address] = Finding(address=address, source="text", text=segment)
        elif (
            segment
            and len(found[address].text) < SEGMENT_LIMIT
            and segment not in found[address].text
        ):
            found[address].text = f"{found[address].text}\n{segment}"
    return list(found.values())


def _stops(anchors: list[tuple[int, int, int, str]], end: int) -> list[int]:
    """For each anchor, where its text stops: the start of the next line that names another
    recipient (lines naming only the same address again do not stop it)."""
    groups: list[tuple[int, int, set[str]]] = []  # (line number, line start, addresses)
    for start, _end, line, address in anchors:
        if groups and groups[-1][0] == line:
            groups[-1][2].add(address)
        else:
            groups.append((line, start, {address}))
    count = len(groups)
    # for a line naming a single address: the first later line that is not only that address
    beyond: list[int] = [count] * count
    for index in range(count - 2, -1, -1):
        only = groups[index][2]
        if len(only) == 1 and groups[index + 1][2] == only:
            beyond[index] = beyond[index + 1]
        else:
            beyond[index] = index + 1
    position = {line: index for index, (line, _start, _addresses) in enumerate(groups)}
    stops = []
    for _start, _end, line, address in anchors:
        nxt = position[line] + 1
        if nxt < count and groups[nxt][2] == {address}:
            nxt = beyond[nxt]
        stops.append(groups[nxt][1] if nxt < count else end)
    return stops


def preamble(notice: str, address: str) -> str:
    """The notice up to the first mention of ``address`` (where some formats put the reason)."""
    position = notice.lower().find(address.lower())
    return notice if position < 0 else notice[:position]
