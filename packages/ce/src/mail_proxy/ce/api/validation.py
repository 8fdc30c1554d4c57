"""Message validation and enqueue: the heart of ``POST /commands/add-messages``.

Each entry is checked on its own: an invalid entry gets a stable, documented *reason* (see
docs/api.md "Rejection reasons") and never blocks the valid ones. The accepted entries become
:class:`~mail_proxy.core.contracts.model.NewMessage` objects inserted with one ``Storage.enqueue`` call
(one durable transaction), after which the dispatcher is notified.

Checks, in order: JSON shape (the :class:`~.models.Message` model), line-breaking characters
in every string that reaches a header or the envelope (the MIME builder's own check,
:func:`~mail_proxy.core.engine.mime.character_problem`), tenant, number of recipients
(``max_recipients``), addresses (strict, see :mod:`.addresses`), extra headers, message id,
account, attachments (``mail_proxy.core.engine.attachments.validate_attachments``, file
names included) and finally the plugins' ``validate_message`` hook.

:func:`enqueue_batch` is usable outside HTTP (the CLI ``send`` command).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.extensions import EnqueueContext, EnqueueRejected, MessageStep
from mail_proxy.core.contracts.model import DEFAULT_TENANT, NewMessage
from mail_proxy.core.engine.attachments import seal_auth, validate_attachments
from mail_proxy.core.engine.encryption import attachment_auth_context
from mail_proxy.core.engine.mime import (
    LINE_BREAKING_OR_TAB,
    RESERVED_HEADERS,
    character_problem,
    new_message_id,
)
from mail_proxy.core.engine.runtime import Runtime

from .addresses import (
    AddressError,
    format_mailbox,
    normalise_address_list,
    parse_mailbox,
    split_address_list,
)
from .directory import TenantDirectory, TenantView, directory_of
from .models import Message, priority_value

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,100}$")  # printable ASCII except ':' (RFC 5322)
_MESSAGE_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f\x41-\x7e]+@[\x21-\x3b\x3d\x3f\x41-\x7e]+>$")
DEFAULT_PRIORITY = 2
_MAX_SHOWN = 100

#: Reasons for a missing required field (pydantic ``missing``).
_MISSING = {
    "id": "missing id",
    "from": "missing from address",
    "to": "no recipients",
    "subject": "missing subject",
}
#: Reasons for a field of the wrong type or out of range.
_INVALID = {
    "from": "invalid from address",
    "reply_to": "invalid reply_to address",
    "return_path": "invalid return_path address",
}


class Rejected(Exception):
    """One entry refused with ``reason`` (internal control flow of the validator)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class BatchResult:
    """What ``add-messages`` answers: ``ok``, ``queued``, ``rejected``."""

    queued: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    #: ``{"id", "warning"}`` from message steps that accepted an entry with a warning.
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.queued == 0 and self.rejected)

    def public(self) -> dict[str, Any]:
        out = {"ok": self.ok, "queued": self.queued, "rejected": self.rejected}
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def _shown(text: str) -> str:
    """User text quoted in a reason: line-breaking characters escaped, length capped."""
    text = text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    return LINE_BREAKING_OR_TAB.sub(lambda m: repr(m.group())[1:-1], text)


def reason_from_error(exc: ValidationError) -> str:
    """The stable reason of the first schema error of an entry."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = err["loc"]
    name = str(loc[0]) if loc else "message"
    kind = err["type"]
    if name == "attachments" and len(loc) >= 2 and isinstance(loc[1], int):
        number = loc[1] + 1
        sub = str(loc[2]) if len(loc) >= 3 else ""
        if not sub:
            return f"attachment {number}: must be an object"
        if kind == "missing":
            return f"attachment {number}: missing {sub}"
        if kind == "extra_forbidden":
            return f"attachment {number}: unknown field {_shown(sub)}"
        return f"attachment {number}: invalid {sub}"
    if kind == "extra_forbidden":
        return f"unknown field: {_shown(name)}"
    if kind == "missing":
        return _MISSING.get(name, f"missing {name}")
    if name == "to" and kind in ("too_short", "string_too_short"):
        return "no recipients"
    return _INVALID.get(name, f"invalid {name}")


def _header_strings(msg: Message) -> Iterator[tuple[str, str, bool]]:
    """``(field, value, TAB allowed)`` for every string of ``msg`` that reaches a header or the
    envelope (attachment file names are checked by ``validate_attachments``)."""
    yield "id", msg.id, False  # the X-Genro-Mail-ID header
    yield "from", msg.from_, True
    for name in ("to", "cc", "bcc"):
        value = getattr(msg, name)
        for item in [value] if isinstance(value, str) else value or ():
            yield name, item, True
    for name in ("reply_to", "return_path", "message_id"):
        value = getattr(msg, name)
        if value is not None:
            yield name, value, True
    yield "subject", msg.subject, True
    if msg.batch_code is not None:
        yield "batch_code", msg.batch_code, False
    for name, value in (msg.headers or {}).items():
        yield "header name", name, False
        yield f"header {name}", value, True


def _refuse_line_breaks(msg: Message) -> None:
    """Reject a character that would end a header line (a forged header, a second ``From``,
    an early end of the header block): the reason names the field and the character."""
    for name, value, tab in _header_strings(msg):
        problem = character_problem(value, name, tab=tab)
        if problem is not None:
            raise Rejected(problem)


def _count(value: str | list[str] | None) -> int:
    """How many mailboxes a ``to``/``cc``/``bcc`` value names (before parsing them)."""
    if value is None:
        return 0
    return len(split_address_list(value)) if isinstance(value, str) else len(value)


def _recipients(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    try:
        return normalise_address_list(value)
    except AddressError as exc:
        raise Rejected(f"invalid recipient address: {_shown(exc.text)}") from None


def _mailbox(value: str, name: str) -> tuple[str, str]:
    try:
        return parse_mailbox(value)
    except AddressError:
        raise Rejected(_INVALID.get(name, f"invalid {name} address")) from None


def _headers(headers: dict[str, str]) -> dict[str, str]:
    for name in headers:
        if not _HEADER_NAME.match(name):
            raise Rejected("invalid header name")
        if name.lower() in RESERVED_HEADERS:
            raise Rejected(f"reserved header: {name}")
    return headers


class _StepPlan:
    """The enqueue steps and their extra message fields, worked out once per runtime: the
    registry is fixed after startup, and a pydantic ``TypeAdapter`` costs far more to build
    than to use (built per batch, they took a quarter of the intake's profile samples
    with every plugin installed)."""

    def __init__(self, runtime: Runtime) -> None:
        registry = runtime.message_steps
        self.steps: list[MessageStep] = [
            step
            for step in (registry.get(name) for name in registry)
            if type(step).at_enqueue is not MessageStep.at_enqueue
        ]
        self.fields: dict[str, TypeAdapter[Any]] = {
            name: TypeAdapter(kind)
            for step in self.steps
            for name, kind in step.message_fields.items()
        }


class MessageValidator:
    """Validates entries for one batch; holds what every entry of the batch shares."""

    def __init__(self, runtime: Runtime, default_priority: int = DEFAULT_PRIORITY) -> None:
        self.runtime = runtime
        self.default_priority = default_priority
        self.max_recipients = runtime.settings.max_recipients
        plan = runtime.local(_StepPlan)
        #: The plugins' steps that look at each entry at enqueue, in name order.
        self.steps = plan.steps
        self.warnings: list[dict[str, Any]] = []
        #: Message fields the steps accept beside the core ones (``MessageStep.message_fields``).
        self.step_fields = plan.fields
        self._step_values: dict[int, dict[str, Any]] = {}

    def shape(self, raw: Any) -> Message:
        """Check the JSON shape of one entry (the steps' own fields checked by their type)."""
        if not isinstance(raw, dict):
            raise Rejected("invalid message")
        values: dict[str, Any] = {}
        if self.step_fields and any(name in raw for name in self.step_fields):
            raw = dict(raw)
            for name, adapter in self.step_fields.items():
                if name in raw:
                    try:
                        values[name] = adapter.validate_python(raw.pop(name))
                    except ValidationError:
                        raise Rejected(f"invalid {name}") from None
        try:
            msg = Message.model_validate(raw)
        except ValidationError as exc:
            raise Rejected(reason_from_error(exc)) from None
        _refuse_line_breaks(msg)
        if values:
            self._step_values[id(msg)] = values
        return msg

    async def build(self, msg: Message, view: TenantView, directory: TenantDirectory) -> NewMessage:
        """The :class:`NewMessage` of a shape-checked entry of ``view``'s tenant."""
        count = _count(msg.to) + _count(msg.cc) + _count(msg.bcc)
        if count > self.max_recipients:  # counted before parsing thousands of addresses
            raise Rejected(
                f"too many recipients: {count} (to + cc + bcc); the limit is {self.max_recipients}"
            )
        from_name, from_addr = _mailbox(msg.from_, "from")
        payload: dict[str, Any] = {"from": format_mailbox(from_name, from_addr)}
        to = _recipients(msg.to)
        if not to:
            raise Rejected("no recipients")
        payload["to"] = to
        for name in ("cc", "bcc"):
            found = _recipients(getattr(msg, name))
            if found:
                payload[name] = found
        if msg.reply_to is not None:
            try:
                payload["reply_to"] = ", ".join(normalise_address_list(msg.reply_to))
            except AddressError:
                raise Rejected(_INVALID["reply_to"]) from None
            if not payload["reply_to"]:
                raise Rejected(_INVALID["reply_to"])
        if msg.return_path is not None:
            payload["return_path"] = _mailbox(msg.return_path, "return_path")[1]
        payload["subject"] = msg.subject
        payload["body"] = msg.body
        payload["content_type"] = msg.content_type
        if msg.body_html is not None:
            payload["body_html"] = msg.body_html
        if msg.headers:
            payload["headers"] = _headers(msg.headers)

        if msg.message_id is not None:
            if len(msg.message_id) > 998 or not _MESSAGE_ID.match(msg.message_id):
                raise Rejected("invalid message_id")
            message_id = msg.message_id
        else:
            message_id = new_message_id(from_addr)

        account_id = msg.account_id
        if account_id is None:
            default = view.default_account
            if default is None:
                raise Rejected("unknown account")
            account_id = default.id
        elif await directory.account(view, account_id) is None:
            raise Rejected("unknown account")

        if msg.attachments:
            attachments = [a.model_dump(exclude_none=True) for a in msg.attachments]
            problem = validate_attachments(attachments, self.runtime) or seal_auth(
                attachments, self.runtime, attachment_auth_context(view.tenant.id, msg.id)
            )
            if problem:
                raise Rejected(problem)
            payload["attachments"] = attachments

        priority = (
            priority_value(msg.priority) if msg.priority is not None else self.default_priority
        )
        new = NewMessage(
            tenant_id=view.tenant.id,
            id=msg.id,
            account_id=account_id,
            priority=priority,
            payload=payload,
            message_id=message_id,
            batch_code=msg.batch_code,
            deferred_ts=msg.deferred_ts,
        )
        if self.steps:
            await self._run_steps(new, view, msg)
        return new

    async def _run_steps(self, new: NewMessage, view: TenantView, msg: Message) -> None:
        """The plugins' ``at_enqueue`` steps: each may refuse the entry, change its payload or
        add a warning for the client."""
        ctx = EnqueueContext(
            view.tenant,
            new.id,
            new.payload,
            self.runtime,
            options={"account_id": new.account_id, **self._step_values.pop(id(msg), {})},
        )
        for step in self.steps:
            try:
                await step.at_enqueue(ctx)
            except EnqueueRejected as exc:
                raise Rejected(str(exc)) from None
        new.payload = ctx.payload
        self.warnings += [{"id": new.id, "warning": w} for w in ctx.warnings]


async def enqueue_batch(
    runtime: Runtime,
    entries: Sequence[Any],
    *,
    tenant_id: str,
    entry_tenants: bool = False,
    default_priority: int | None = None,
    now: float | None = None,
) -> BatchResult:
    """Validate ``entries`` and enqueue the accepted ones in one transaction.

    ``tenant_id`` is the tenant the request is bound to; an entry naming another tenant is
    rejected with ``tenant mismatch``. With ``entry_tenants`` (an admin request that named no
    tenant) each entry's own ``tenant_id`` decides instead (``unknown tenant`` if it does not
    exist). A batch larger than ``max_batch_messages`` is refused whole (413).
    """
    limit = runtime.settings.max_batch_messages
    if len(entries) > limit:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(entries)} messages in one request; the limit is {limit} "
            "(GMP_MAX_BATCH_MESSAGES)",
            limit=limit,
        )
    now = time.time() if now is None else now
    validator = MessageValidator(
        runtime, DEFAULT_PRIORITY if default_priority is None else default_priority
    )
    directory = directory_of(runtime)
    views: dict[str, TenantView | None] = {}
    result = BatchResult()
    accepted: list[NewMessage] = []
    index_of: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()

    for index, raw in enumerate(entries):
        client_id = raw.get("id") if isinstance(raw, dict) else None
        shown_id = client_id if isinstance(client_id, str) else None
        try:
            msg = validator.shape(raw)
            target = (msg.tenant_id or DEFAULT_TENANT) if entry_tenants else tenant_id
            if not entry_tenants and msg.tenant_id is not None and msg.tenant_id != tenant_id:
                raise Rejected("tenant mismatch")
            if target not in views:
                views[target] = await directory.get(target)
            view = views[target]
            if view is None:
                raise Rejected("unknown tenant")
            if (target, msg.id) in seen:
                raise Rejected("duplicate id in batch")
            seen.add((target, msg.id))
            accepted.append(await validator.build(msg, view, directory))
            index_of.setdefault(msg.id, index)
        except Rejected as exc:
            result.rejected.append({"id": shown_id, "reason": exc.reason, "index": index})

    if accepted:
        stored = await runtime.storage.enqueue(accepted, now)
        result.queued = stored.queued
        for client_id, reason in stored.rejected:
            result.rejected.append(
                {"id": client_id, "reason": reason, "index": index_of.get(client_id)}
            )
        if stored.rejected:
            result.rejected.sort(key=lambda r: (r["index"] is None, r["index"] or 0))
        if stored.queued:
            runtime.notify_enqueued()
        refused = {client_id for client_id, _ in stored.rejected}
        result.warnings = [w for w in validator.warnings if w["id"] not in refused]
    return result
