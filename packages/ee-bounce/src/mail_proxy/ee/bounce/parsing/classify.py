"""Codes and text → reason category, hard/soft type and the rule that decided.

**Status code used.** The enhanced code the remote server wrote in its own answer (inside the
diagnostic) wins over the ``Status:`` field the reporting MTA computed, because the latter is
often a generic ``5.0.0`` or a guess; without a code in the text the field is used.

**Reason**, in this order:

1. a *definitive* RFC 3463 code decides by itself: X.1.1/X.1.10 (and Exchange's X.1.351)
   user_unknown, X.1.2 host_unknown, X.1.6 has_moved, X.2.2 mailbox_full, X.2.3/X.3.4
   message_too_big, X.4.4 host_unknown (unable to route), X.4.7 expired, X.7.13 suspended,
   X.7.17 has_moved, X.7.20–X.7.26 policy_blocked (DKIM/SPF/DMARC failures);
   — except that a recipient-state or rate phrase in the text that contradicts it wins
   (``550 5.1.1 ... has sent to too many recipients this hour`` is a rate limit);
2. otherwise the best text pattern of :mod:`.patterns` (tiered: recipient state, then the
   receiver's judgement, other policies, transport, weak catch-alls), looked for in the
   report's diagnostic, then the notice's text about the recipient, then — for a
   single-recipient bounce — the notice before it; a "user unknown"/"no such domain"
   answer to ``MAIL FROM`` is about the sender and becomes policy_blocked;
3. otherwise the generic meaning of the code's subject (X.1.x address → user_unknown,
   X.2.0/X.2.1 mailbox disabled → suspended, X.3.x system → other, X.4.x network →
   network_error, X.5.x protocol → other, X.6.x content → content_rejected, X.7.x security
   or policy → policy_blocked);
4. otherwise the SMTP reply code (551 has_moved, 552 mailbox_full, 553 user_unknown,
   421 network_error);
5. otherwise ``other``.

A network_error in a report whose notice says the message expired (returned after days
in the queue) becomes expired (:func:`settle_expiry`).

**Type** (hard = permanent, soft = temporary), in this order:

1. ``Action: delayed`` → soft (the MTA is still trying);
2. the class of the status code: 5 → hard, 4 → soft;
3. the class of the SMTP reply code: 5xx → hard, 4xx → soft;
4. what the notice itself declares: "permanent error", "failed permanently", "I've given
   up", "will not continue trying", "no further delivery attempts" → hard; "temporary",
   "delayed", "will be retried", "has not yet been delivered" → soft;
5. the reason: user_unknown, host_unknown, has_moved, suspended, message_too_big,
   spam_blocked, policy_blocked, content_rejected → hard (sending the same again to the same
   address will fail again); mailbox_full, network_error, expired, other → soft (the
   address itself may be fine).
"""

from __future__ import annotations

import functools
import re

from .dsn import status_code
from .mime import mask_emails
from .patterns import JUDGEMENT_TIER, TIERS

_READ_LIMIT = 4000
_NOTICE_LIMIT = 20000
_DEFINITIVE: dict[str, str] = {
    "1.1": "user_unknown",
    "1.10": "user_unknown",
    "1.351": "user_unknown",
    "1.2": "host_unknown",
    "1.6": "has_moved",
    "2.2": "mailbox_full",
    "2.3": "message_too_big",
    "3.4": "message_too_big",
    "4.4": "host_unknown",
    "4.7": "expired",
    "7.13": "suspended",
    "7.17": "has_moved",
    "7.20": "policy_blocked",
    "7.21": "policy_blocked",
    "7.22": "policy_blocked",
    "7.23": "policy_blocked",
    "7.24": "policy_blocked",
    "7.25": "policy_blocked",
    "7.26": "policy_blocked",
}
#: Text reasons allowed to override a definitive code (the text is then the better witness).
_OVERRIDING = {"mailbox_full", "suspended", "has_moved", "message_too_big"}
_RATE_OVERRIDE = ("rate limit",)

_SUBJECT_DEFAULT = {
    "1": "user_unknown",
    "2": "suspended",
    "3": "other",
    "4": "network_error",
    "5": "other",
    "6": "content_rejected",
    "7": "policy_blocked",
}
_GENERIC = {"1.0": "other", "2.4": "other", "3.1": "other"}
_SMTP_DEFAULT = {
    "551": "has_moved",
    "552": "mailbox_full",
    "553": "user_unknown",
    "421": "network_error",
}
_HARD_REASONS = {
    "user_unknown",
    "host_unknown",
    "has_moved",
    "suspended",
    "message_too_big",
    "spam_blocked",
    "policy_blocked",
    "content_rejected",
}

#: A refusal of the MAIL FROM command is about the sender, whatever the words resemble.
_AT_MAIL_FROM = re.compile(
    r"after mail from|in reply to mail from|mail from command|\[mail_from\]", re.I
)
_RECIPIENT_REASONS = {"user_unknown", "host_unknown"}
_SMTP = re.compile(r"(?<![\w.:/#=-])(4[2-5]\d|5[0-5]\d)(?=[ -]|$|[:;,.]\s|\))", re.M)
_PERMANENT = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal|failed)|failed permanently|i've given up|"
    r"will not (?:continue|try|be retried|retry)|no further (?:delivery )?attempts|"
    r"not going to try again|permanent fatal errors|this has been a permanent",
    re.I,
)
_TEMPORARY = re.compile(
    r"temporary (?:failure|error|problem)|this is a warning|has been delayed|is delayed|"
    r"will be retried|will (?:continue|keep) (?:to )?try|has not yet been delivered|"
    r"still being retried|delivery attempts will continue|warning message only",
    re.I,
)


def match_text(text: str) -> tuple[str, str] | None:
    """The ``(reason, pattern name)`` that best describes ``text``, or ``None`` (see
    :func:`locate`)."""
    found = locate(text)
    return (found[0], found[1]) if found else None


def locate(text: str) -> tuple[str, str, int] | None:
    """``(reason, pattern name, position in the collapsed text)`` of the best match in the
    table of :mod:`.patterns`.

    The first tier with a match decides; inside it, the first pattern in table order
    (all tiers but one) or the phrase found first in the text (the judgement tier).
    """
    # addresses are masked: a local part such as "spam@" or "mailboxfull@" is not a reason;
    # only the start is read: what a server says about a failure is short, and a pattern
    # scan of a huge text (a pasted attachment) would cost seconds
    return _locate_flat(" ".join(mask_emails((text or "")[:_READ_LIMIT]).split()).lower())


@functools.lru_cache(maxsize=512)
def _locate_flat(flat: str) -> tuple[str, str, int] | None:
    # cached: the recipients of one report often share their text
    if not flat:
        return None
    for tier, patterns in enumerate(TIERS):
        hits = []
        for order, (reason, name, compiled) in enumerate(patterns):
            found = compiled.search(flat)
            if found:
                rank = found.start() if tier == JUDGEMENT_TIER else 0
                hits.append((rank, order, reason, name, found.start()))
        if hits:
            _rank, _order, reason, name, position = min(hits)
            return reason, name, position
    return None


def pattern(name: str) -> re.Pattern[str]:
    """The compiled pattern of the table entry called ``name``."""
    for patterns in TIERS:
        for _reason, entry, compiled in patterns:
            if entry == name:
                return compiled
    raise KeyError(name)


def smtp_code(text: str) -> str:
    """The first SMTP failure reply code (4xx/5xx) in ``text``, or ``""``."""
    found = _SMTP.search(text or "")
    return found.group(1) if found else ""


def pick_status(field_status: str, *texts: str) -> str:
    """The status to report: a failure code quoted in the texts, else the ``Status`` field."""
    for text in texts:
        code = status_code(text)
        if code and code[0] in "45":
            return code
    return field_status


def reason_for(status: str, smtp: str, texts: list[tuple[str, str]]) -> tuple[str, str]:
    """``(reason, rule)`` from the status, the SMTP code and ``(label, text)`` pairs in order.

    ``label`` names the text in the rule (``diagnostic``, ``notice``).
    """
    text_match: tuple[str, str, str] | None = None
    for label, text in texts:
        found = match_text(text)
        if found:
            text_match = (found[0], found[1], label)
            break
    detail = status.split(".", 1)[1] if status.count(".") == 2 else ""
    if detail in _DEFINITIVE:
        if (
            text_match
            and text_match[2] == "diagnostic"
            and (text_match[0] in _OVERRIDING or text_match[1] in _RATE_OVERRIDE)
        ):
            if text_match[0] != _DEFINITIVE[detail]:
                return text_match[0], f"{text_match[2]} pattern '{text_match[1]}' over {status}"
        return _DEFINITIVE[detail], f"status {status}"
    if text_match:
        if text_match[0] in _RECIPIENT_REASONS and any(_AT_MAIL_FROM.search(t) for _l, t in texts):
            return "policy_blocked", f"{text_match[2]} pattern '{text_match[1]}' at MAIL FROM"
        return text_match[0], f"{text_match[2]} pattern '{text_match[1]}'"
    if detail:
        subject = detail.split(".")[0]
        if detail in _GENERIC:
            return _GENERIC[detail], f"status {status}"
        if subject in _SUBJECT_DEFAULT:
            return _SUBJECT_DEFAULT[subject], f"status {status} (class X.{subject}.x)"
    if smtp in _SMTP_DEFAULT:
        return _SMTP_DEFAULT[smtp], f"smtp {smtp}"
    return "other", f"smtp {smtp} (text not recognised)" if smtp else "nothing recognised"


def says_expired(context: str) -> bool:
    """Whether a notice (with its subject) says the message was given up after retrying."""
    flat = " ".join((context or "")[:_NOTICE_LIMIT].split()).lower()
    return bool(pattern("expired").search(flat))


def settle_expiry(reason: str, rule: str, action: str, expired_notice: bool) -> tuple[str, str]:
    """A connection failure in a report that gave up after retrying is an expiry.

    The per-recipient text often shows only the last attempt ("Connection timed out") while
    the notice or its subject says the message was returned after days in the queue ("Cannot
    send message for 5 days", "retry timeout exceeded"): the message expired, and the
    network is only why (``expired_notice`` is :func:`says_expired` of the notice). A delay
    notice (``Action: delayed``) has not expired yet.
    """
    if reason == "network_error" and action != "delayed" and expired_notice:
        return "expired", f"{rule}, in a notice that says the message expired"
    return reason, rule


def notice_declares(notice: str) -> str:
    """``"soft"``, ``"hard"`` or ``""``: what the notice says of the failure in so many words
    ("this is only a temporary failure report", "This is a permanent error")."""
    head = (notice or "")[:_NOTICE_LIMIT]
    if _TEMPORARY.search(head):
        return "soft"
    if _PERMANENT.search(head):
        return "hard"
    return ""


def type_for(status: str, smtp: str, action: str, declared: str, reason: str) -> tuple[str, str]:
    """``(type, why)``: hard or soft, following the order in the module docstring
    (``declared`` is :func:`notice_declares` of the notice)."""
    if action == "delayed":
        return "soft", "action delayed"
    if status[:1] in ("4", "5"):
        return ("hard" if status[0] == "5" else "soft"), f"status {status}"
    if smtp[:1] in ("4", "5"):
        return ("hard" if smtp[0] == "5" else "soft"), f"smtp {smtp}"
    if declared == "soft":
        return "soft", "notice says temporary"
    if declared == "hard":
        return "hard", "notice says permanent"
    return ("hard" if reason in _HARD_REASONS else "soft"), f"reason {reason}"
