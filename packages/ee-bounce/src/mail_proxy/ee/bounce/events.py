"""The event types the plugin records, and how they are reported and shown.

``bounce``: one per failed recipient of a bounce matched to its message. The delivery-report
item carries ``bounce_ts``, ``bounce_type`` (``hard``/``soft``), ``bounce_code`` (the RFC 3463
status, else the SMTP reply code), ``bounce_reason`` (the category, model.REASONS),
``bounce_diagnostic`` (the server's text) and ``recipient``. The event's metadata adds the
explanation: ``rule`` (what decided the reason and the class), ``status``, ``smtp_code``,
``matched_by`` (``verp`` or ``message_id``), ``bounce_message_id`` and ``mailbox``.

``GET /messages/{id}`` shows ``bounce_type``, ``bounce_code``, ``bounce_reason`` and
``bounce_ts`` of the message's most telling bounce: the latest hard one, else the latest
soft one; all null until a bounce.

``complaint``: a feedback-loop (ARF) report about the message: a recipient marked it as
spam. Never a bounce, never a suppression; reported with ``complaint_ts`` and ``recipient``.
"""

from __future__ import annotations

from typing import Any

from mail_proxy.core.contracts.extensions import EventType
from mail_proxy.core.contracts.model import EventRecord

BOUNCE = "bounce"
COMPLAINT = "complaint"
VIEW_FIELDS = ("bounce_type", "bounce_code", "bounce_reason", "bounce_ts")


def bounce_report(event: EventRecord) -> dict[str, Any]:
    meta = event.metadata or {}
    return {
        "bounce_ts": event.event_ts,
        "bounce_type": meta.get("bounce_type"),
        "bounce_code": meta.get("bounce_code"),
        "bounce_reason": meta.get("bounce_reason"),
        "bounce_diagnostic": meta.get("diagnostic"),
        "recipient": meta.get("recipient"),
    }


def bounce_view(events: list[EventRecord]) -> dict[str, Any]:
    bounces = [e for e in events if e.event_type == BOUNCE]
    hard = [e for e in bounces if (e.metadata or {}).get("bounce_type") == "hard"]
    chosen = (hard or bounces)[-1] if bounces else None
    if chosen is None:
        return dict.fromkeys(VIEW_FIELDS)
    meta = chosen.metadata or {}
    return {
        "bounce_type": meta.get("bounce_type"),
        "bounce_code": meta.get("bounce_code"),
        "bounce_reason": meta.get("bounce_reason"),
        "bounce_ts": chosen.event_ts,
    }


def complaint_report(event: EventRecord) -> dict[str, Any]:
    meta = event.metadata or {}
    return {"complaint_ts": event.event_ts, "recipient": meta.get("recipient")}


EVENT_TYPES = (
    EventType(
        BOUNCE,
        "A recipient's server returned the message (bounce detection over IMAP).",
        bounce_report,
        bounce_view,
    ),
    EventType(
        COMPLAINT,
        "A recipient reported the message as spam (feedback-loop report).",
        complaint_report,
    ),
)
