"""The example plugin's routes: notes on messages (its own table and event type), counters."""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.model import NewEvent
from mail_proxy.core.contracts.routes import RouteTable
from mail_proxy.core.web.app import AUDIT_SUMMARY, body_of, ok, runtime_of, tenant_of

from .parts import Counters, Heartbeat
from .tables import add_note, list_notes


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    note: str = Field(min_length=1, max_length=500)


async def post_note(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    tenant_id, message_id = tenant_of(request), request.match_info["id"]
    body: NoteBody = body_of(request)
    if await rt.storage.get_message(tenant_id, message_id) is None:
        raise ApiError(404, "message_not_found", "no message with this id for this tenant")
    await add_note(rt, tenant_id, message_id, body.note)
    await rt.record_events(
        [NewEvent(tenant_id, message_id, "example_noted", time.time(), body.note)]
    )
    request[AUDIT_SUMMARY] = {"message_id": message_id}
    return ok({"noted": True})


async def get_notes(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    return ok({"notes": await list_notes(rt, tenant_of(request), request.match_info["id"])})


async def seen(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    counters = rt.local(Counters)
    return ok(
        {
            "events": dict(counters.events),
            "tenants_changed": counters.changed,
            "heartbeat_ticks": rt.local(Heartbeat, lambda _rt: Heartbeat()).ticks,
        }
    )


def register(routes: RouteTable, plugin: str) -> None:
    routes.add(
        "POST",
        "/example/notes/{id}",
        post_note,
        scope="tenant",
        body=NoteBody,
        plugin=plugin,
        summary="Add a note to a message (example plugin)",
    )
    routes.add(
        "GET",
        "/example/notes/{id}",
        get_notes,
        scope="tenant",
        plugin=plugin,
        summary="A message's notes (example plugin)",
    )
    routes.add(
        "GET",
        "/example/seen",
        seen,
        scope="admin",
        plugin=plugin,
        summary="What the example plugin's hooks saw (example plugin)",
    )
