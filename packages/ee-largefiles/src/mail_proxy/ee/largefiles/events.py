"""The plugin's event types and their delivery-report shape.

- ``attachment_offloaded``: an attachment was uploaded and replaced by a link (name, size,
  link expiry); recorded once per upload, not again when a retry reuses the file;
- ``attachment_over_limit``: with ``action: "warn"``, an attachment over the limit was sent
  as it is.

``GET /messages/{id}`` shows ``offloaded_attachments`` for a message with offloaded files.
"""

from __future__ import annotations

from typing import Any

from mail_proxy.core.contracts.extensions import EventType
from mail_proxy.core.contracts.model import EventRecord

OFFLOADED = "attachment_offloaded"
OVER_LIMIT = "attachment_over_limit"


def _offloaded(event: EventRecord) -> dict[str, Any]:
    meta = event.metadata or {}
    return {
        "event": OFFLOADED,
        "event_ts": event.event_ts,
        "attachment_name": meta.get("filename"),
        "attachment_size": meta.get("size"),
        "link_expires_ts": meta.get("expires_at"),
    }


def _over_limit(event: EventRecord) -> dict[str, Any]:
    meta = event.metadata or {}
    return {
        "event": OVER_LIMIT,
        "event_ts": event.event_ts,
        "attachment_name": meta.get("filename"),
        "attachment_size": meta.get("size"),
        "limit_mb": meta.get("limit_mb"),
    }


def _message_view(events: list[EventRecord]) -> dict[str, Any]:
    offloaded = [
        {
            "filename": (e.metadata or {}).get("filename"),
            "size": (e.metadata or {}).get("size"),
            "link_expires_ts": (e.metadata or {}).get("expires_at"),
        }
        for e in events
        if e.event_type == OFFLOADED
    ]
    return {"offloaded_attachments": offloaded} if offloaded else {}


EVENT_TYPES = (
    EventType(
        OFFLOADED,
        "An attachment over the tenant's limit was uploaded to object storage and replaced "
        "by a download link (``attachment_name``, ``attachment_size``, ``link_expires_ts``).",
        report=_offloaded,
        message_view=_message_view,
    ),
    EventType(
        OVER_LIMIT,
        "With action 'warn': an attachment over the tenant's limit was sent attached "
        "(``attachment_name``, ``attachment_size``, ``limit_mb``).",
        report=_over_limit,
    ),
)
