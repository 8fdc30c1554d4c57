"""Message routes: enqueue, list, inspect, delete, clean up."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.model import MessageRecord
from mail_proxy.core.contracts.storage import MessageFilter
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.web.app import (
    AUDIT_SUMMARY,
    body_of,
    ok,
    principal_of,
    query_of,
    runtime_of,
    tenant_named,
    tenant_of,
)

from .models import (
    AddMessagesBody,
    CleanupBody,
    DeleteMessagesBody,
    MessagesQuery,
    RequeueMessagesBody,
    priority_value,
)
from .pagination import decode_cursor, decode_time_cursor, encode_cursor, encode_time_cursor
from .validation import enqueue_batch

#: Cursors by order: newest-first ones are refused for oldest-first pages (and back), and
#: pages in creation-time order (``since``/``until``) have cursors of their own.
_DESC_PREFIX = "d1:"
_ASC_PREFIX = "p1:"
_TIME_PREFIXES = {False: "t1:", True: "td1:"}


async def add_messages(request: web.Request) -> web.Response:
    """Validate each entry, enqueue the valid ones in one transaction, report the others."""
    rt = runtime_of(request)
    body: AddMessagesBody = body_of(request)
    with rt.intake.accepting(len(body.messages)):
        result = await enqueue_batch(
            rt,
            body.messages,
            tenant_id=tenant_of(request),
            entry_tenants=principal_of(request).is_admin and not tenant_named(request),
            default_priority=(
                priority_value(body.default_priority) if body.default_priority is not None else None
            ),
        )
    request[AUDIT_SUMMARY] = {"queued": result.queued, "rejected": len(result.rejected)}
    return ok(result.public())


async def list_messages(request: web.Request) -> web.Response:
    """One keyset page of the tenant's messages, filtered; ``next_cursor`` continues it."""
    rt = runtime_of(request)
    q: MessagesQuery = query_of(request)
    if q.since is not None and q.until is not None and q.since >= q.until:
        raise ApiError(
            400,
            "invalid_range",
            "since must be earlier than until",
            details=[{"field": "since", "message": "not before until"}],
        )
    descending = q.order == "desc"
    by_time = q.since is not None or q.until is not None
    origin = f"this server (order={q.order}{', since/until' if by_time else ''})"
    after_pk: int | None
    after_ts: float | None = None
    if by_time:
        prefix = _TIME_PREFIXES[descending]
        position = decode_time_cursor(q.cursor, prefix, origin)
        after_ts, after_pk = position if position else (None, None)
    else:
        prefix = _DESC_PREFIX if descending else _ASC_PREFIX
        after_pk = decode_cursor(q.cursor, prefix, origin)
    rows = await rt.storage.list_messages(
        MessageFilter(
            tenant_id=tenant_of(request),
            status=q.status,
            batch_code=q.batch_code,
            account_id=q.account_id,
            created_since=q.since,
            created_until=q.until,
            after_created_at=after_ts,
            descending=descending,
            active_only=q.active_only,
            limit=q.limit + 1,
            after_pk=after_pk,
        )
    )
    next_cursor = None
    if len(rows) > q.limit:
        rows = rows[: q.limit]
        last = rows[-1]
        next_cursor = (
            encode_time_cursor(last.created_at, last.pk, prefix)
            if by_time
            else encode_cursor(last.pk, prefix)
        )
    return ok({"messages": [r.public() for r in rows], "next_cursor": next_cursor})


def message_detail(record: MessageRecord) -> dict[str, Any]:
    """The list fields plus what a person looks for in one message (never the body)."""
    payload = record.payload or {}
    return {
        **record.public(),
        "message_id": record.message_id,
        "subject": payload.get("subject"),
        "from": payload.get("from"),
        "to": payload.get("to") or [],
        "cc": payload.get("cc") or [],
        "attachments": [a.get("filename") for a in payload.get("attachments") or []],
        "recipients": [r.public() for r in record.recipients],
        "uncertain": record.uncertain,
    }


async def get_message(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    record = await rt.storage.get_message(tenant_of(request), request.match_info["id"])
    if record is None:
        raise ApiError(404, "message_not_found", "no message with this id for this tenant")
    detail = message_detail(record)
    views = [et.message_view for _, et in rt.event_types.items() if et.message_view is not None]
    if views:  # fields plugins derive from the message's events (bounce_type, pec_*, ...)
        events = await rt.storage.list_events(record.tenant_id, record.id) or []
        for view in views:
            detail.update(view(events))
    return ok({"message": detail})


async def message_events(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    events = await rt.storage.list_events(tenant_of(request), request.match_info["id"])
    if events is None:
        raise ApiError(404, "message_not_found", "no message with this id for this tenant")
    # reported_ts: when the client acknowledged the report item of this event (None: not
    # yet, or an event that is not reported, such as requeued)
    return ok({"events": [{**e.public(), "reported_ts": e.reported_ts} for e in events]})


def _check_batch(rt: Runtime, ids: list[str]) -> None:
    """413 ``batch_too_large`` for more ids in one command than ``max_batch_messages``."""
    limit = rt.settings.max_batch_messages
    if len(ids) > limit:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(ids)} ids in one request; the limit is {limit}",
            limit=limit,
        )


async def delete_messages(request: web.Request) -> web.Response:
    """Remove unsent messages; sent, failed or in-flight ones are listed as unauthorized."""
    rt = runtime_of(request)
    body: DeleteMessagesBody = body_of(request)
    _check_batch(rt, body.ids)
    result = await rt.storage.delete_messages(tenant_of(request), body.ids)
    request[AUDIT_SUMMARY] = {"removed": result.removed}
    return ok(
        {
            "removed": result.removed,
            "not_found": result.not_found,
            "unauthorized": result.unauthorized,
        }
    )


async def requeue_messages(request: web.Request) -> web.Response:
    """Queue failed messages again; others are listed in ``not_failed`` / ``not_found``."""
    rt = runtime_of(request)
    body: RequeueMessagesBody = body_of(request)
    _check_batch(rt, body.ids)
    # (the database's clock, as the dispatcher writes its times: engine/clock.py)
    result = await rt.storage.requeue_messages(tenant_of(request), body.ids, rt.clock.now())
    if result.requeued:
        rt.wake_dispatcher()
    request[AUDIT_SUMMARY] = {"requeued": result.requeued}
    return ok(
        {
            "requeued": result.requeued,
            "not_found": result.not_found,
            "not_failed": result.not_failed,
        }
    )


async def cleanup_messages(request: web.Request) -> web.Response:
    """Purge finished, fully reported messages older than ``older_than_seconds``."""
    rt = runtime_of(request)
    body: CleanupBody = body_of(request)
    older = body.older_than_seconds
    if older is None:
        older = rt.settings.report_retention_seconds
    removed = await rt.storage.cleanup_messages(tenant_of(request), time.time() - older)
    request[AUDIT_SUMMARY] = {"removed": removed, "older_than_seconds": older}
    return ok({"removed": removed})
