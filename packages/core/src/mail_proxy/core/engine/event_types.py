"""The core's own event types (the delivery outcomes) and their delivery-report shapes
(API.md "Delivery reports"), registered by the built-in plugin through
``register_event_types`` like any plugin's."""

from __future__ import annotations

from typing import Any

from mail_proxy.core.contracts.extensions import EventType
from mail_proxy.core.contracts.model import EventRecord


def _attempt(event: EventRecord) -> dict[str, Any]:
    """What an outcome's item may add: each tried recipient's state (``recipients``) when they
    differ (some got it, some did not, some wait), and ``uncertain: true`` for a message
    retaken after a crash (this attempt may be a duplicate)."""
    meta = event.metadata or {}
    fields: dict[str, Any] = {}
    recipients = meta.get("recipients") or []
    if len({r["status"] for r in recipients}) > 1:
        fields["recipients"] = recipients
    if meta.get("uncertain"):
        fields["uncertain"] = True
    return fields


def _sent(event: EventRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {"sent_ts": event.event_ts, **_attempt(event)}
    failed = [r["address"] for r in fields.get("recipients", ()) if r["status"] == "error"]
    if failed:  # delivered to the others: these are the ones to act on
        fields["failed_recipients"] = failed
    return fields


def _error(event: EventRecord) -> dict[str, Any]:
    error = event.description or (event.metadata or {}).get("error") or "delivery failed"
    return {"error_ts": event.event_ts, "error": error, **_attempt(event)}


def _deferred(event: EventRecord) -> dict[str, Any]:
    meta = event.metadata or {}
    return {
        "deferred_ts": meta.get("deferred_ts"),
        "deferred_reason": meta.get("deferred_reason") or event.description,
        **_attempt(event),
    }


CORE_EVENT_TYPES = (
    EventType(
        "sent",
        "The server accepted the message for at least one recipient (any that failed for "
        "good are in ``failed_recipients``, every recipient's state in ``recipients``).",
        _sent,
    ),
    EventType("error", "The message failed for good (the reason in ``error``).", _error),
    EventType("deferred", "A temporary failure: retried at ``deferred_ts``.", _deferred),
)
