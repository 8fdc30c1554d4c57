"""Account routes: add or update, list, delete. Passwords go in encrypted and never come out."""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

from aiohttp import web

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.model import Account
from mail_proxy.core.contracts.transport import TransportError
from mail_proxy.core.engine.account_fields import AccountFieldsCodec
from mail_proxy.core.engine.encryption import account_password_context
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.web.app import AUDIT_SUMMARY, body_of, ok, principal_of, runtime_of, tenant_of

from .models import AccountBody

_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?$")


def public_account(account: Account, runtime: Runtime) -> dict[str, Any]:
    """The account as the API shows it: no password; the plugins' fields without secrets."""
    return {
        **runtime.local(AccountFieldsCodec).public(account.extra),
        "id": account.id,
        "tenant_id": account.tenant_id,
        "transport": account.transport,
        "host": account.host,
        "port": account.port,
        "user": account.user,
        "has_password": bool(account.password_enc),
        "use_tls": account.use_tls,
        "starttls": account.starttls,
        "allow_plaintext_auth": account.allow_plaintext_auth,
        "timeout": account.timeout,
        "message_timeout": account.message_timeout,
        "max_connections": account.max_connections,
        "batch_size": account.batch_size,
        "limit_per_minute": account.limit_per_minute,
        "limit_per_hour": account.limit_per_hour,
        "limit_per_day": account.limit_per_day,
        "limit_behavior": account.limit_behavior,
        "default": account.default,
        "options": account.options,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    }


def _valid_host(host: str) -> bool:
    if _HOSTNAME.match(host):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _check(body: AccountBody, request: web.Request) -> None:
    rt = runtime_of(request)
    if body.transport not in rt.transport_factories:
        known = ", ".join(rt.transport_factories.names()) or "none"
        raise ApiError(
            400, "unknown_transport", f"unknown transport {body.transport!r} (known: {known})"
        )
    if rt.transport(body.transport).operator_only and not principal_of(request).is_admin:
        raise ApiError(
            403,
            "admin_only",
            f"the {body.transport!r} transport acts on the server's own disk: only the admin "
            "token may create or change such accounts",
        )
    if body.transport == "smtp" and not body.host:
        raise ApiError(400, "invalid_host", "an smtp account needs a host")
    if body.host and not _valid_host(body.host):
        raise ApiError(400, "invalid_host", "host must be a host name or an IP address")
    if body.user is not None and re.search(r"[\x00-\x1f\x7f]", body.user):
        raise ApiError(400, "invalid_user", "user may not contain control characters")


async def save_account(request: web.Request) -> web.Response:
    """Add or update (same id) an account. Omitting ``password`` keeps the stored one;
    ``null`` or ``""`` removes it."""
    rt = runtime_of(request)
    body: AccountBody = body_of(request)
    _check(body, request)
    tenant_id = tenant_of(request)
    existing = await rt.storage.get_account(tenant_id, body.id)
    plugin_fields = rt.local(AccountFieldsCodec).split(
        body.model_extra or {}, existing.extra if existing else None, tenant_id, body.id
    )
    if "password" in body.model_fields_set:
        password_enc = (
            rt.encrypt(body.password, account_password_context(tenant_id, body.id))
            if body.password
            else None
        )
    else:
        password_enc = existing.password_enc if existing else None
    account = Account(
        tenant_id=tenant_id,
        id=body.id,
        host=body.host,
        port=body.port,
        user=body.user,
        password_enc=password_enc,
        use_tls=body.use_tls,
        starttls=body.starttls,
        allow_plaintext_auth=body.allow_plaintext_auth,
        timeout=body.timeout,
        message_timeout=body.message_timeout,
        max_connections=body.max_connections,
        batch_size=body.batch_size,
        limit_per_minute=body.limit_per_minute,
        limit_per_hour=body.limit_per_hour,
        limit_per_day=body.limit_per_day,
        limit_behavior=body.limit_behavior,
        default=body.default,
        transport=body.transport,
        options=body.options,
        extra=plugin_fields,
    )
    saved = await rt.storage.save_account(account)
    await rt.tenant_changed(tenant_id)
    request[AUDIT_SUMMARY] = {"account_id": body.id, "created": existing is None}
    return ok({"account": public_account(saved, rt)})


async def list_accounts(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    accounts = await rt.storage.list_accounts(tenant_of(request))
    return ok({"accounts": [public_account(a, rt) for a in accounts]})


async def delete_account(request: web.Request) -> web.Response:
    """Delete an account; refused (409 ``account_has_messages``) while it has active messages."""
    rt = runtime_of(request)
    tenant_id = tenant_of(request)
    account_id = request.match_info["account_id"]
    if await rt.storage.get_account(tenant_id, account_id) is None:
        raise ApiError(404, "account_not_found", f"no account {account_id!r} for this tenant")
    active = await rt.storage.count_active_messages(tenant_id, account_id)
    if active:
        raise ApiError(
            409,
            "account_has_messages",
            f"account {account_id!r} still has {active} queued message(s): wait for them, "
            "or remove them with POST /commands/delete-messages, then retry",
            active_messages=active,
        )
    await rt.storage.delete_account(tenant_id, account_id)
    await rt.tenant_changed(tenant_id)
    request[AUDIT_SUMMARY] = {"account_id": account_id}
    return ok({"removed": account_id})


async def probe_account(request: web.Request) -> web.Response:
    """Try the account's server now (connect, TLS, login, QUIT for SMTP) without sending.

    The outcome is the answer's ``connected`` and ``detail`` (the server's refusal when it
    failed); the request itself succeeds either way."""
    rt = runtime_of(request)
    tenant_id = tenant_of(request)
    account_id = request.match_info["account_id"]
    account = await rt.storage.get_account(tenant_id, account_id)
    if account is None:
        raise ApiError(404, "account_not_found", f"no account {account_id!r} for this tenant")
    transport = rt.transport(account.transport)
    probe = getattr(transport, "probe", None)
    if probe is None:
        raise ApiError(
            400,
            "test_unsupported",
            f"the {account.transport!r} transport cannot test a connection",
        )
    started = time.monotonic()
    try:
        detail = await probe(account)
        connected = True
    except TransportError as exc:
        detail, connected = str(exc), False
    elapsed_ms = round(1000 * (time.monotonic() - started), 1)
    request[AUDIT_SUMMARY] = {"account_id": account_id, "connected": connected}
    return ok(
        {
            "account_id": account_id,
            "connected": connected,
            "detail": detail,
            "elapsed_ms": elapsed_ms,
        }
    )
