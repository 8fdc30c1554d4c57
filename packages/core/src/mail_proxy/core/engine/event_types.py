"""The core's own event types (the delivery outcomes) and their delivery-report shapes
(API.md "Delivery reports"), registered by the built-in plugin through
``register_event_types`` like any plugin's."""

from __future__ import annotations

from typing import Any

from mail_proxy.core.contracts.extensions import EventType
from mail_proxy.core.contracts.model import EventRecord


def _sent(event: EventRecord) -> dict[str, Any]:
    return {"sent_ts": event.event_ts}


def _error(event: EventRecord) -> dict[str, Any]:
    error = event.description or (event.metadata or {}).get("error") or "delivery failed"
    return {"error_ts": event.event_ts, "error": error}


def _deferred(event: EventRecord) -> dict[str, Any]:
    meta = event.metadata or {}
    return {
        "deferred_ts": meta.get("deferred_ts"),
        "deferred_reason": meta.get("deferred_reason") or event.description,
    }


CORE_EVENT_TYPES = (
    EventType("sent", "The message was accepted by the server for every recipient.", _sent),
    EventType("error", "The message failed for good (the reason in ``error``).", _error),
    EventType("deferred", "A temporary failure: retried at ``deferred_ts``.", _deferred),
)
