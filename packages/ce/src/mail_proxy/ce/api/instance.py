"""Admin routes: the instance's live settings, key rotation and the command log (audit
trail)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from mail_proxy.core import __version__
from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.engine.encryption import EncryptionError, parse_key
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.web.app import AUDIT as AUDIT_WRITER
from mail_proxy.core.web.app import AUDIT_SUMMARY, body_of, ok, query_of, runtime_of

from .models import CommandLogQuery, ExportQuery, InstanceUpdate
from .pagination import decode_cursor, page

EXPORT_PAGE = 500
#: API field → Settings attribute, for the settings ``PUT /instance`` may change.
_FIELDS = {
    "name": "instance_name",
    "send_loop_interval": "send_loop_interval",
    "max_retries": "max_retries",
    "retry_delays": "retry_delays",
    "sync_interval": "sync_interval",
}


def instance_view(rt: Runtime) -> dict[str, Any]:
    s = rt.settings
    view: dict[str, Any] = {api: getattr(s, attr) for api, attr in _FIELDS.items()}
    view["scheduler_active"] = rt.scheduler.active
    view["version"] = __version__
    view["instance_id"] = rt.instance_id
    return view


async def get_instance(request: web.Request) -> web.Response:
    return ok({"instance": instance_view(runtime_of(request))})


async def put_instance(request: web.Request) -> web.Response:
    """Change live settings: stored (they outlive a restart) and applied at once."""
    rt = runtime_of(request)
    body: InstanceUpdate = body_of(request)
    nulls = sorted(k for k in body.model_fields_set if getattr(body, k) is None)
    if nulls:
        details = [{"field": k, "message": "may not be null"} for k in nulls]
        raise ApiError(
            400, "validation_error", f"invalid body: {nulls[0]}: may not be null", details=details
        )
    changes = body.model_dump(exclude_unset=True)
    stored: dict[str, Any] = {_FIELDS[k]: v for k, v in changes.items() if k in _FIELDS}
    if "scheduler_active" in changes:
        stored["scheduler_active"] = changes["scheduler_active"]
    if stored:
        await rt.storage.put_settings(stored)
    for key, value in stored.items():
        if key == "scheduler_active":
            rt.scheduler.set(value)
        else:
            setattr(rt.settings, key, value)
    if changes.get("scheduler_active") or "send_loop_interval" in stored:
        rt.wake_dispatcher()
    request[AUDIT_SUMMARY] = {"changed": sorted(changes)}
    return ok({"instance": instance_view(rt)})


class RotateKeyBody(BaseModel):
    """``POST /instance/rotate-key``: the new key. It is never logged, echoed or audited."""

    model_config = ConfigDict(extra="forbid", strict=True)

    new_key: str = Field(
        min_length=1, max_length=128, description="base64 of 32 random bytes (mail-proxy keygen)"
    )


async def rotate_key(request: web.Request) -> web.Response:
    """Re-encrypt every stored secret with a new key, in one transaction, and use it at once.

    The caller must make the new key the instance's configured key before the next restart
    (``mail-proxy NAME rotate-key`` writes the key file); until then a restart fails its key
    check and says so.
    """
    rt = runtime_of(request)
    body: RotateKeyBody = body_of(request)
    try:
        key = parse_key(body.new_key, "new_key")
    except EncryptionError as exc:
        raise ApiError(400, "invalid_key", str(exc)) from None
    if rt.cipher is None:
        raise ApiError(
            409,
            "encryption_key_missing",
            "the instance has no encryption key: configure one (MAIL_PROXY_ENCRYPTION_KEY or "
            "the key file) and restart instead of rotating",
        )
    try:
        count = await rt.rotate_key(key)
    except EncryptionError:
        raise ApiError(
            409,
            "key_mismatch",
            "a stored secret does not decrypt with the current key: nothing was changed",
        ) from None
    request[AUDIT_SUMMARY] = {"reencrypted": count}  # never the key
    # where this instance read its key (a variable name or a path, not the key): the
    # caller must put the new key there before the next restart
    return ok({"reencrypted": count, "key_source": rt.key_source})


async def _flush_audit(request: web.Request) -> None:
    """Write buffered audit entries first, so the log includes the caller's last commands."""
    writer = request.app.get(AUDIT_WRITER)
    if writer is not None:
        await writer.flush()


async def command_log(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    q: CommandLogQuery = query_of(request)
    await _flush_audit(request)
    rows = await rt.storage.list_command_log(
        limit=q.limit + 1, after_pk=decode_cursor(q.cursor), since_ts=q.since
    )
    rows, next_cursor = page(rows, q.limit)
    return ok({"entries": [r.public() for r in rows], "next_cursor": next_cursor})


async def export_command_log(request: web.Request) -> web.StreamResponse:
    """The whole log (or since ``since``) as JSON lines, streamed page by page."""
    rt = runtime_of(request)
    q: ExportQuery = query_of(request)
    await _flush_audit(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson; charset=utf-8",
            "Content-Disposition": 'attachment; filename="command-log.ndjson"',
        }
    )
    await response.prepare(request)
    after: int | None = None
    while True:
        rows = await rt.storage.list_command_log(
            limit=EXPORT_PAGE, after_pk=after, since_ts=q.since
        )
        if rows:
            lines = "".join(
                json.dumps(r.public(), ensure_ascii=False, separators=(",", ":")) + "\n"
                for r in rows
            )
            await response.write(lines.encode())
            after = rows[-1].pk
        if len(rows) < EXPORT_PAGE:
            break
    await response.write_eof()
    return response
