"""The example plugin's declarations: settings, models, event type, message step, service,
counters and the tenant-token check."""

from __future__ import annotations

import hmac
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mail_proxy.core.contracts.config import parse_opt_str, setting
from mail_proxy.core.contracts.extensions import (
    DeliveryContext,
    EnqueueContext,
    EnqueueRejected,
    Event,
    EventType,
    MessageStep,
)
from mail_proxy.core.contracts.model import EventRecord, Principal
from mail_proxy.core.contracts.services import PeriodicService
from mail_proxy.core.engine.tenant_settings import TenantSettings

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


@dataclass
class ExampleSettings:
    """The ``example`` settings section."""

    example_verp_domain: str | None = setting(
        None,
        "GMP_EXAMPLE_VERP_DOMAIN",
        "Example plugin: envelope sender bounce+<message id>@this domain (unset: unchanged).",
        parse_opt_str,
    )
    example_tenant_token: str | None = setting(
        None,
        "GMP_EXAMPLE_TENANT_TOKEN",
        "Example plugin: TENANT:TOKEN, a token that authenticates as that tenant.",
        parse_opt_str,
    )


class Labels(BaseModel):
    """The ``example_labels`` tenant setting."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 ._-]+$")
    api_secret: str | None = None


class Region(BaseModel):
    """The ``example_region`` account field."""

    model_config = ConfigDict(extra="forbid")
    example_region: str | None = Field(None, pattern=r"^[a-z]{2}-[a-z]+$")


def _noted_report(event: EventRecord) -> dict[str, Any]:
    return {"noted_ts": event.event_ts, "note": event.description}


def _notes_view(events: list[EventRecord]) -> dict[str, Any]:
    return {"example_notes": [e.description for e in events if e.event_type == "example_noted"]}


NOTED = EventType(
    "example_noted",
    "A note was added to the message (POST /example/notes/{id}).",
    report=_noted_report,
    message_view=_notes_view,
)


class ExampleStep(MessageStep):
    """At enqueue: refuse ``[blocked]`` subjects, label the tenant's messages, accept an
    ``example_priority_hint``; before sending: the VERP envelope sender."""

    name = "example"
    message_fields: ClassVar[dict[str, Any]] = {"example_priority_hint": int}

    async def at_enqueue(self, ctx: EnqueueContext) -> None:
        if "[blocked]" in (ctx.payload.get("subject") or ""):
            raise EnqueueRejected("subject is blocked by the example plugin")
        labels = await ctx.runtime.local(TenantSettings).get(ctx.tenant.id, "example_labels")
        if labels is not None:
            headers = dict(ctx.payload.get("headers") or {})
            headers["X-Example-Label"] = labels.label
            ctx.payload["headers"] = headers
        hint = ctx.options.get("example_priority_hint")
        if hint is not None:
            ctx.warnings.append(f"example_priority_hint {hint} noted, not used")

    async def before_send(self, ctx: DeliveryContext) -> None:
        domain = ctx.runtime.settings.section("example").example_verp_domain
        if domain:
            ctx.sender = verp_address(ctx.record.id, domain)


def verp_address(message_id: str, domain: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "=" for ch in message_id)
    return f"bounce+{safe}@{domain}"


def tenant_token_principal(token: str, runtime: Runtime) -> Principal | None:
    configured = runtime.settings.section("example").example_tenant_token
    if not configured or ":" not in configured:
        return None
    tenant_id, expected = configured.split(":", 1)
    if hmac.compare_digest(token.encode(), expected.encode()):
        return Principal("tenant", tenant_id)
    return None


@dataclass
class Counters:
    """What ``on_event`` and ``tenant_changed`` saw on this runtime."""

    runtime: Any = None
    events: Counter[str] = field(default_factory=Counter)
    changed: list[str] = field(default_factory=list)

    def seen(self, event: Event) -> None:
        self.events[event.type] += 1


class Heartbeat(PeriodicService):
    """A background service: counts its ticks (shown by GET /example/seen)."""

    name = "example-heartbeat"
    interval = 0.05

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    @classmethod
    def create(cls, runtime: Runtime) -> Heartbeat:
        return runtime.local(Heartbeat, lambda _rt: cls())

    async def tick(self) -> None:
        self.ticks += 1
