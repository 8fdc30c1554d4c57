"""The pull alternative to pushed delivery reports: ``GET /reports`` and ``POST /reports/ack``.

A client that cannot expose a sync endpoint (or prefers polling) reads its tenant's
unacknowledged report items in order and acknowledges them with a cursor:

* ``GET /reports?after=<cursor>&limit=<n>`` → ``{"ok", "delivery_report": [item...],
  "next_cursor", "has_more"}``. Items have the pushed shape plus ``"cursor"`` (the position
  of that item). Without ``after`` the list starts at the oldest unacknowledged event;
  ``next_cursor`` is the cursor of the last item (``after`` echoed back when the page is
  empty), so ``after=next_cursor`` resumes exactly after what was read.
* ``POST /reports/ack {"cursor": c}`` → ``{"ok", "acknowledged": n}``: acknowledges every
  unacknowledged event of the tenant up to and including ``c`` — the same effect as a pushed
  batch the client accepted (never sent again, counted out of the backlog, purgeable by
  retention).

Cursors are opaque strings (distinct from the ``/messages`` page cursors).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from mail_proxy.ce.api import pagination
from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.engine.reporter import report_item
from mail_proxy.core.web.app import AUDIT_SUMMARY, body_of, ok, query_of, runtime_of, tenant_of

if TYPE_CHECKING:
    from mail_proxy.core.contracts.routes import RouteTable

_PREFIX = "r1:"
MAX_PAGE = 1000
#: Events acknowledged per transaction by ``POST /reports/ack``.
ACK_CHUNK = 1000


class ReportsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(None, description="next_cursor of the previous page")
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    tenant_id: str | None = None


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    cursor: str = Field(min_length=1, description="acknowledge everything up to this cursor")
    tenant_id: str | None = None


def encode_cursor(pk: int) -> str:
    return pagination.encode_cursor(pk, _PREFIX)


def decode_cursor(cursor: str) -> int:
    """The event position a report cursor stands for; 400 ``invalid_cursor`` otherwise."""
    pk = pagination.decode_cursor(cursor, _PREFIX, "GET /reports")
    if pk is None:  # an empty cursor names no position
        raise ApiError(400, "invalid_cursor", "the cursor is not one GET /reports returned")
    return pk


async def list_reports(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    tenant_id = tenant_of(request)
    query: ReportsQuery = query_of(request)
    after = decode_cursor(query.after) if query.after else None
    events = await rt.storage.fetch_unreported(tenant_id, query.limit + 1, after_pk=after)
    has_more = len(events) > query.limit
    events = events[: query.limit]
    items = [{**report_item(e, rt.event_types), "cursor": encode_cursor(e.pk)} for e in events]
    next_cursor = items[-1]["cursor"] if items else query.after
    return ok({"delivery_report": items, "next_cursor": next_cursor, "has_more": has_more})


async def acknowledge(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    tenant_id = tenant_of(request)
    body: AckBody = body_of(request)
    upto = decode_cursor(body.cursor)
    done = 0
    while True:
        page = await rt.storage.fetch_unreported(tenant_id, ACK_CHUNK)
        pks = [e.pk for e in page if e.pk <= upto]
        if pks:
            done += await rt.storage.acknowledge_events(tenant_id, pks, time.time())
        if len(pks) < ACK_CHUNK:
            break
    request[AUDIT_SUMMARY] = {"acknowledged": done}
    return ok({"acknowledged": done})


def register(routes: RouteTable, plugin: str) -> None:
    """Add the pull routes (tenant-scoped: a tenant token sees only its own reports)."""
    routes.add(
        "GET",
        "/reports",
        list_reports,
        scope="tenant",
        query=ReportsQuery,
        plugin=plugin,
        summary="Unacknowledged delivery reports in order (pull API)",
    )
    routes.add(
        "POST",
        "/reports/ack",
        acknowledge,
        scope="tenant",
        body=AckBody,
        plugin=plugin,
        summary="Acknowledge pulled delivery reports up to a cursor",
    )
