"""The result types of the bounce parser: :class:`BounceReport` and :class:`RecipientFailure`.

They are plain dataclasses with a ``to_dict()`` for JSON, so the plugin can store them, send
them to a delivery-report endpoint or print them from the command line unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The reason categories. What each means (and what the operator can do):
#:
#: * ``user_unknown`` — the mailbox does not exist (remove the address);
#: * ``host_unknown`` — the domain does not exist, has no mail server or accepts no mail;
#: * ``mailbox_full`` — over quota (may clear up);
#: * ``message_too_big`` — over the receiver's size limit (send it smaller);
#: * ``spam_blocked`` — the receiver's filter judged *this message* to be spam;
#: * ``policy_blocked`` — *who sends* is refused, or a receiving rule forbids it: SPF, DKIM,
#:   DMARC or reverse-DNS failures, block lists and IP reputation, relay, rate limits,
#:   posting permissions, the envelope sender refused (fix the sending set-up or standing);
#: * ``content_rejected`` — virus, forbidden attachment, malformed message;
#: * ``expired`` — the sending MTA gave up after retrying for its queue lifetime;
#: * ``network_error`` — connection, DNS, TLS or routing trouble on the way;
#: * ``has_moved`` — the recipient left (sometimes with a new address);
#: * ``suspended`` — the account exists but is disabled, locked or inactive;
#: * ``other`` — anything else (system errors, protocol errors, unrecognised text).
REASONS = (
    "user_unknown",
    "host_unknown",
    "mailbox_full",
    "message_too_big",
    "spam_blocked",
    "policy_blocked",
    "content_rejected",
    "expired",
    "network_error",
    "has_moved",
    "suspended",
    "other",
)

#: The kinds of report; only ``bounce`` has ``is_bounce`` true.
KINDS = ("bounce", "complaint", "autoreply", "delivered", "not_bounce")


@dataclass
class RecipientFailure:
    """One recipient a report is about.

    ``type`` is ``"hard"`` (permanent) or ``"soft"`` (temporary) for a failure, and ``""`` for
    the recipients of a report that is not a failure (complaint, success notification,
    auto-reply). ``rule`` names what decided ``reason`` (and ``type`` when it did not come from
    a code), so an operator can see why. ``original_recipient`` is the RFC 3464
    Original-Recipient when the report gives one that differs from ``address``.
    """

    address: str
    status: str = ""
    smtp_code: str = ""
    type: str = ""
    reason: str = "other"
    diagnostic: str = ""
    rule: str = ""
    original_recipient: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BounceReport:
    """What :func:`~mail_proxy.ee.bounce.parsing.parse_bounce` found in one message."""

    is_bounce: bool = False
    kind: str = "not_bounce"
    recipients: list[RecipientFailure] = field(default_factory=list)
    message_id: str | None = None
    mail_id: str | None = None
    original_headers: dict[str, str] = field(default_factory=dict)
    envelope_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "is_bounce": self.is_bounce,
            "kind": self.kind,
            "recipients": [r.to_dict() for r in self.recipients],
            "message_id": self.message_id,
            "mail_id": self.mail_id,
            "original_headers": dict(self.original_headers),
            "envelope_to": self.envelope_to,
        }


@dataclass
class Finding:
    """A recipient as one parser saw it, before classification (internal).

    ``source`` says which parser found it (``dsn``, ``text``, ``header``, ``original``,
    ``json``); ``text`` is the stretch of notification text that talks about the recipient
    (used when ``diagnostic`` says nothing useful).
    """

    address: str
    source: str
    action: str = ""
    status: str = ""
    diagnostic: str = ""
    original_recipient: str = ""
    text: str = ""
