"""The message step: the tenant's ``large_file_config`` applied at enqueue and at send time.

- at enqueue, sizes the message states (``size``, inline base64): ``reject`` refuses the
  entry (``attachment 1: 83.2 MB is over the 25 MB limit``), ``warn`` accepts it with that
  warning;
- before fetching (``rewrite``): every attachment over the limit, or of unknown size, is
  streamed to the storage (:mod:`.offload`) and taken out of the message the dispatcher
  fetches; ``reject`` fails the message on a size known by then (a file's ``stat``);
- after fetching: sizes learned only by fetching are acted on (``reject`` fails the
  message, ``warn`` records ``attachment_over_limit``, ``rewrite`` offloads a file whose
  declared size was too small);
- before sending: the links of the offloaded files go into the text and HTML bodies.

What an attempt offloaded is kept beside its delivery context until it is sent (or the
context is dropped).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.errors import MessageContentError
from mail_proxy.core.contracts.extensions import (
    DeliveryContext,
    EnqueueContext,
    EnqueueRejected,
    MessageStep,
)
from mail_proxy.core.engine.attachments import AttachmentError, parse_spec, unseal_auth
from mail_proxy.core.engine.encryption import attachment_auth_context

from .config import MB, LargeFileConfig, declared_size, over_limit
from .events import OVER_LIMIT
from .linkblock import Link, add_links
from .locations import tenant_config
from .offload import Offloader, known_size
from .settings import SECTION

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


@dataclass
class _Attempt:
    """What one delivery attempt offloaded, and where the attachments left in the message
    stood in the original list."""

    config: LargeFileConfig
    positions: list[int]
    links: list[Link] = field(default_factory=list)


class AttemptNotes:
    """Per-attempt notes keyed by delivery context, dropped with the context."""

    def __init__(self, runtime: Runtime) -> None:
        self._notes: dict[int, _Attempt] = {}

    def put(self, ctx: DeliveryContext, note: _Attempt) -> None:
        key = id(ctx)
        self._notes[key] = note
        weakref.finalize(ctx, self._notes.pop, key, None)

    def get(self, ctx: DeliveryContext) -> _Attempt | None:
        return self._notes.get(id(ctx))


class LargeFilesStep(MessageStep):
    name = "large_files"

    async def at_enqueue(self, ctx: EnqueueContext) -> None:
        atts = ctx.payload.get("attachments")
        if not atts:
            return
        config = await tenant_config(ctx.runtime, ctx.tenant.id)
        if config is None or not config.enabled:
            return
        cap = int(ctx.runtime.settings.section(SECTION).large_files_max_mb * MB)
        for number, att in enumerate(atts, start=1):
            size = declared_size(att)
            if size is None or size <= config.limit_bytes:
                continue
            if config.action == "reject":
                raise EnqueueRejected(over_limit(number, size, config))
            if config.action == "warn":
                ctx.warnings.append(over_limit(number, size, config))
            elif size > cap:
                raise EnqueueRejected(
                    f"attachment {number}: {size / MB:.1f} MB is over the largest file "
                    f"offloaded ({cap / MB:g} MB)"
                )

    async def before_fetch(self, ctx: DeliveryContext) -> None:
        atts = ctx.payload.get("attachments")
        if not atts:
            return
        config = await tenant_config(ctx.runtime, ctx.tenant.id)
        if config is None or not config.enabled or config.action == "warn":
            return
        note = _Attempt(config, [])
        kept: list[dict[str, Any]] = []
        offloader = Offloader(ctx, config) if config.offloads else None
        for position, att in enumerate(atts):
            try:
                spec = parse_spec(unseal_auth(att, ctx.runtime, _auth_place(ctx)))
            except AttachmentError:  # the dispatcher reports it
                spec = None
            size = await known_size(att, spec) if spec is not None else None
            if spec is None or (size is not None and size <= config.limit_bytes):
                kept.append(att)
                note.positions.append(position)
                continue
            if offloader is None:  # reject
                if size is not None:
                    raise MessageContentError(over_limit(position + 1, size, config))
                kept.append(att)
                note.positions.append(position)
                continue
            result = await offloader.from_source(position, spec, known_large=size is not None)
            if isinstance(result, Link):
                note.links.append(result)
            else:  # within the limit after all: back into the message, inline
                kept.append(_inline(att, result))
                note.positions.append(position)
        if len(kept) != len(atts) or any(a is not b for a, b in zip(kept, atts, strict=True)):
            ctx.payload = {**ctx.payload, "attachments": kept}
        ctx.runtime.local(AttemptNotes).put(ctx, note)

    async def after_fetch(self, ctx: DeliveryContext) -> None:
        if not ctx.attachments:
            return
        note = ctx.runtime.local(AttemptNotes).get(ctx)
        config = (
            note.config if note is not None else await tenant_config(ctx.runtime, ctx.tenant.id)
        )
        if config is None or not config.enabled:
            return
        positions = note.positions if note is not None else list(range(len(ctx.attachments)))
        over = [
            (index, position)
            for index, (position, fetched) in enumerate(
                zip(positions, ctx.attachments, strict=True)
            )
            if len(fetched.content) > config.limit_bytes
        ]
        if not over:
            return
        if config.action == "reject":
            index, position = over[0]
            size = len(ctx.attachments[index].content)
            raise MessageContentError(over_limit(position + 1, size, config))
        if config.action == "warn":
            await _warn(ctx, config, [(p, ctx.attachments[i]) for i, p in over])
            return
        assert note is not None
        payload_atts = ctx.payload.get("attachments") or []
        offloader = Offloader(ctx, config)
        for index, position in reversed(over):
            spec = parse_spec(unseal_auth(payload_atts[index], ctx.runtime, _auth_place(ctx)))
            link = await offloader.from_memory(position, spec, ctx.attachments[index].content)
            note.links.insert(0, link)
            del ctx.attachments[index]

    async def before_send(self, ctx: DeliveryContext) -> None:
        note = ctx.runtime.local(AttemptNotes).get(ctx)
        if note is not None and note.links and ctx.email is not None:
            add_links(ctx.email, note.links, note.config.link_text)


def _inline(att: dict[str, Any], content: bytes) -> dict[str, Any]:
    """An attachment whose content was read while looking for its size, as inline base64."""
    import base64

    inline = {k: v for k, v in att.items() if k in ("filename", "mime_type", "content_md5", "size")}
    inline.update(storage_path=base64.b64encode(content).decode("ascii"), fetch_mode="base64")
    return inline


async def _warn(ctx: DeliveryContext, config: LargeFileConfig, over: list[tuple[int, Any]]) -> None:
    """Record ``attachment_over_limit`` once per attachment (not again on a retry)."""
    events = await ctx.runtime.storage.list_events(ctx.record.tenant_id, ctx.record.id) or []
    done = {(e.metadata or {}).get("position") for e in events if e.event_type == OVER_LIMIT}
    for position, fetched in over:
        if position in done:
            continue
        size = len(fetched.content)
        ctx.add_event(
            OVER_LIMIT,
            over_limit(position + 1, size, config) + " (sent attached)",
            filename=fetched.filename,
            size=size,
            limit_mb=config.max_size_mb,
            position=position,
        )


def _auth_place(ctx: DeliveryContext) -> str:
    """Where the message's attachment credentials were sealed (its payload)."""
    return attachment_auth_context(ctx.tenant.id, ctx.record.id)
