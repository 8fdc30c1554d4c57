"""``mail-proxy NAME tenants list|add|show|update|delete|api-key``.

Every command is a REST call to the running instance with its admin token (the CLI helpers
of :mod:`mail_proxy.core.cli.main`), so the server's validation applies unchanged.
Secrets (API key, report-signing secret) are printed once, when they are created. A plugin's
tenant setting is given as ``--setting NAME=JSON`` (the server knows which plugins are
installed and validates the value with the plugin's model).
"""

from __future__ import annotations

import json as jsonlib
import time
from typing import Annotated, Any, Literal, cast
from urllib.parse import quote

from cyclopts import App, Parameter

from mail_proxy.core.cli.errors import CliError, UsageError
from mail_proxy.core.cli.output import (
    fmt_ts,
    print_fields,
    print_json,
    print_table,
)
from mail_proxy.core.cli.prompt import confirm, interactive, optional, require
from mail_proxy.core.cli.rest import Client
from mail_proxy.core.cli.target import current

app = App(name="tenants", help="Tenants of the instance (multitenancy plugin).")

AuthMethod = Literal["none", "bearer", "basic"]
Clearable = Literal[
    "name",
    "base-url",
    "sync-path",
    "attachment-path",
    "auth",
    "rate-limits",
]
_CLEAR_FIELDS = {
    "name": "name",
    "base-url": "client_base_url",
    "sync-path": "client_sync_path",
    "attachment-path": "client_attachment_path",
    "auth": "client_auth",
    "rate-limits": "rate_limits",
}
COLUMNS = [
    ("id", "ID"),
    ("name", "NAME"),
    ("active", "ACTIVE"),
    ("client_base_url", "BASE URL"),
    ("auth", "AUTH"),
    ("quota", "QUOTA m/h/d"),
    ("key", "API KEY"),
]
SHOW_KEYS = [
    "id",
    "name",
    "active",
    "client_base_url",
    "client_sync_path",
    "client_attachment_path",
    "client_auth",
    "rate_limits",
    "has_api_key",
    "api_key_expires_at",
    "has_sync_secret",
    "suspended_batches",
    "created_at",
    "updated_at",
]


def _path(tenant_id: str, suffix: str = "") -> str:
    return f"/tenant/{quote(tenant_id, safe='')}{suffix}"


def _client() -> Client:
    return current().client()


# -- list / show ----------------------------------------------------------------------------
@app.command(name="list")
def list_tenants(*, json: bool = False) -> int:
    """List the tenants (no secrets).

    Parameters
    ----------
    json
        Print the tenants as the API returns them.
    """
    client = _client()
    tenants: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        answer = client.get("/tenants", {"limit": 1000, "cursor": cursor})
        tenants.extend(answer.get("tenants", []))
        cursor = answer.get("next_cursor")
        if not cursor:
            break
    if json:
        print_json({"ok": True, "tenants": tenants})
        return 0
    print_table([_row(t) for t in tenants], COLUMNS, empty="(no tenants)")
    return 0


def _row(tenant: dict[str, Any]) -> dict[str, Any]:
    auth = tenant.get("client_auth") or {}
    limits = tenant.get("rate_limits") or {}
    quota = "/".join(str(limits.get(f"per_{p}") or "-") for p in ("minute", "hour", "day"))
    if not tenant.get("has_api_key"):
        key = "none"
    elif tenant.get("api_key_expires_at"):
        key = f"until {fmt_ts(tenant['api_key_expires_at'])}"
    else:
        key = "yes"
    return {**tenant, "auth": auth.get("method"), "quota": quota, "key": key}


@app.command
def show(tenant_id: str, /, *, json: bool = False) -> int:
    """Show one tenant's configuration (secrets are never shown).

    Parameters
    ----------
    tenant_id
        Tenant id.
    json
        Print the GET /tenant/{id} answer.
    """
    answer = _client().get(_path(tenant_id))
    if json:
        print_json(answer)
        return 0
    tenant = dict(answer.get("tenant") or {})
    for key in ("api_key_expires_at", "created_at", "updated_at"):
        tenant[key] = fmt_ts(tenant.get(key))
    # the plugins' tenant settings, after the tenant's own fields
    settings = sorted(k for k in tenant if k not in SHOW_KEYS)
    print_fields(tenant, [k for k in SHOW_KEYS if k in tenant] + settings)
    return 0


# -- add / update -------------------------------------------------------------------------------
@app.command
def add(
    tenant_id: str | None = None,
    /,
    *,
    name: str | None = None,
    base_url: str | None = None,
    sync_path: str | None = None,
    attachment_path: str | None = None,
    auth: AuthMethod | None = None,
    auth_token: str | None = None,
    auth_user: str | None = None,
    auth_password: str | None = None,
    per_minute: int | None = None,
    per_hour: int | None = None,
    per_day: int | None = None,
    inactive: bool = False,
    key_expires_in: float | None = None,
    setting: list[str] | None = None,
    json: bool = False,
) -> int:
    """Create a tenant. Its API key and report-signing secret are printed once.

    Values not given are asked for on a terminal; without a terminal only TENANT_ID is
    required.

    Parameters
    ----------
    tenant_id
        Tenant id (letters, digits, '.', '_', '-').
    name
        Display name.
    base_url
        Base URL of the tenant's application (delivery reports, attachments).
    sync_path
        Path of the delivery-report endpoint (default /mail-proxy/sync).
    attachment_path
        Path of the attachment endpoint (default /mail-proxy/attachments).
    auth
        How the proxy authenticates to the tenant's endpoints: none, bearer or basic.
    auth_token
        Bearer token (prefer the prompt: options show in `ps`).
    auth_user
        Basic-auth user.
    auth_password
        Basic-auth password (prefer the prompt).
    per_minute
        Tenant-wide sends per minute (on top of account limits).
    per_hour
        Tenant-wide sends per hour.
    per_day
        Tenant-wide sends per day.
    inactive
        Create the tenant inactive (its token is refused, its messages are held).
    key_expires_in
        Days until the first API key expires (default: never).
    setting
        A plugin's tenant setting as NAME=JSON, e.g.
        'large_file_config={"enabled": true, "action": "warn"}' (repeatable).
    json
        Print the POST /tenant answer (it contains the secrets).
    """
    client = _client()  # fail before prompting when the instance is down
    tenant_id = require(tenant_id, "TENANT_ID", "Tenant id")
    name = optional(name, "Name")
    base_url = optional(base_url, "Base URL of the tenant's application")
    if base_url and sync_path is None:
        sync_path = optional(None, "Delivery-report path (Enter for /mail-proxy/sync)")
    body: dict[str, Any] = {"id": tenant_id, "active": not inactive}
    _put(body, "name", name)
    _put(body, "client_base_url", base_url)
    _put(body, "client_sync_path", sync_path)
    _put(body, "client_attachment_path", attachment_path)
    if auth is None and base_url and interactive():
        auth = require(
            None,
            "--auth",
            "Auth to the tenant (none/bearer/basic)",
            parse=_auth_method,
            default="none",
        )
    if auth is not None:
        body["client_auth"] = _auth_body(auth, auth_token, auth_user, auth_password)
    limits = _limits({}, per_minute, per_hour, per_day)
    if limits:
        body["rate_limits"] = limits
    if key_expires_in is not None:
        body["api_key_expires_at"] = _expiry(key_expires_in)
    _put_settings(body, setting)
    answer = client.post("/tenant", body)
    if json:
        print_json(answer)
        return 0
    tenant = answer.get("tenant") or {}
    print(f"tenant {tenant.get('id', tenant_id)!r} created")
    _print_secret("API key", answer.get("api_key"))
    _print_secret("Report signing secret", answer.get("sync_secret"))
    return 0


@app.command
def update(
    tenant_id: str,
    /,
    *,
    name: str | None = None,
    base_url: str | None = None,
    sync_path: str | None = None,
    attachment_path: str | None = None,
    auth: AuthMethod | None = None,
    auth_token: str | None = None,
    auth_user: str | None = None,
    auth_password: str | None = None,
    per_minute: int | None = None,
    per_hour: int | None = None,
    per_day: int | None = None,
    active: Annotated[bool | None, Parameter(negative="--inactive")] = None,
    setting: list[str] | None = None,
    clear: list[Clearable] | None = None,
    json: bool = False,
) -> int:
    """Change a tenant: only the options given change.

    Parameters
    ----------
    tenant_id
        Tenant id.
    name
        Display name.
    base_url
        Base URL of the tenant's application.
    sync_path
        Path of the delivery-report endpoint.
    attachment_path
        Path of the attachment endpoint.
    auth
        none, bearer or basic; a secret not given is kept when the method is unchanged.
    auth_token
        Bearer token.
    auth_user
        Basic-auth user.
    auth_password
        Basic-auth password.
    per_minute
        Tenant-wide sends per minute (0 = no limit); other quotas are kept.
    per_hour
        Tenant-wide sends per hour (0 = no limit).
    per_day
        Tenant-wide sends per day (0 = no limit).
    active
        --active resumes the tenant, --inactive holds its messages and refuses its token.
    setting
        A plugin's tenant setting as NAME=JSON, replacing the stored one, e.g.
        'large_file_config={"enabled": true, "action": "warn"}'; NAME=null removes it
        (repeatable).
    clear
        Fields to remove: name, base-url, sync-path, attachment-path, auth, rate-limits
        (repeatable).
    json
        Print the PUT /tenant/{id} answer.
    """
    client = _client()
    body: dict[str, Any] = {}
    _put(body, "name", name)
    _put(body, "client_base_url", base_url)
    _put(body, "client_sync_path", sync_path)
    _put(body, "client_attachment_path", attachment_path)
    _put(body, "active", active)
    if auth is not None:
        body["client_auth"] = _auth_body(auth, auth_token, auth_user, auth_password, ask=False)
    elif auth_token or auth_user or auth_password:
        raise UsageError("--auth-token/--auth-user/--auth-password need --auth METHOD")
    if (per_minute, per_hour, per_day) != (None, None, None):
        existing = (client.get(_path(tenant_id)).get("tenant") or {}).get("rate_limits") or {}
        body["rate_limits"] = _limits(existing, per_minute, per_hour, per_day)
    _put_settings(body, setting)
    for item in clear or []:
        field = _CLEAR_FIELDS[item]
        if field in body:
            raise UsageError(f"--clear {item} conflicts with a value given for it")
        body[field] = None
    if not body:
        raise UsageError("nothing to change (see: tenants update --help)")
    answer = client.request("PUT", _path(tenant_id), body=body)
    if json:
        print_json(answer)
        return 0
    print(f"tenant {tenant_id!r} updated ({', '.join(sorted(body))})")
    return 0


# -- delete / api-key --------------------------------------------------------------------------
@app.command
def delete(tenant_id: str, /, *, yes: bool = False, json: bool = False) -> int:
    """Delete a tenant with its accounts, messages, events and cached attachments.

    Parameters
    ----------
    tenant_id
        Tenant id.
    yes
        Do not ask for confirmation on a terminal.
    json
        Print the DELETE answer.
    """
    client = _client()
    question = f"Delete tenant {tenant_id!r} with all its accounts and messages?"
    if not confirm(question, yes):
        raise CliError("not deleted")
    answer = client.delete(_path(tenant_id))
    if json:
        print_json(answer)
    else:
        print(f"tenant {tenant_id!r} deleted")
    return 0


@app.command(name="api-key")
def api_key(
    tenant_id: str,
    /,
    *,
    revoke: bool = False,
    expires_in: float | None = None,
    json: bool = False,
) -> int:
    """Issue a new API key for a tenant (the old one stops working at once), or revoke it.

    Parameters
    ----------
    tenant_id
        Tenant id.
    revoke
        Revoke the current key without issuing a new one.
    expires_in
        Days until the new key expires (default: never).
    json
        Print the API answer.
    """
    client = _client()
    if revoke:
        if expires_in is not None:
            raise UsageError("--revoke and --expires-in do not go together")
        answer = client.delete(_path(tenant_id, "/api-key"))
        if not json:
            state = "revoked" if answer.get("revoked") else "had no key"
            print(f"tenant {tenant_id!r}: API key {state}")
    else:
        body = {} if expires_in is None else {"expires_at": _expiry(expires_in)}
        answer = client.post(_path(tenant_id, "/api-key"), body)
        if not json:
            print(f"tenant {tenant_id!r}: new API key issued; the previous key no longer works")
            _print_secret("API key", answer.get("api_key"))
            if answer.get("expires_at"):
                print(f"expires {fmt_ts(answer['expires_at'])}")
    if json:
        print_json(answer)
    return 0


# -- helpers ---------------------------------------------------------------------------------------
def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


def _put_settings(body: dict[str, Any], settings: list[str] | None) -> None:
    """Add each ``--setting NAME=JSON`` to ``body`` under NAME."""
    for item in settings or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--setting {item!r}: write NAME=JSON, e.g. bounce='{{...}}'")
        if name in body:
            raise UsageError(f"--setting {name}: {name} is given twice (or has its own option)")
        try:
            body[name] = jsonlib.loads(text)
        except ValueError as exc:
            raise UsageError(f"--setting {name}: the value is not valid JSON: {exc}") from None


def _auth_method(text: str) -> AuthMethod:
    if text not in ("none", "bearer", "basic"):
        raise ValueError("choose none, bearer or basic")
    return cast(AuthMethod, text)


def _auth_body(
    method: str,
    token: str | None,
    user: str | None,
    password: str | None,
    *,
    ask: bool = True,
) -> dict[str, Any]:
    """The ``client_auth`` object; on ``add`` a missing secret is asked for (no echo)."""
    body: dict[str, Any] = {"method": method}
    if method == "bearer":
        if token is None and ask:
            token = require(None, "--auth-token", "Bearer token", secret=True)
        _put(body, "token", token)
    elif method == "basic":
        body["user"] = require(user, "--auth-user", "Basic-auth user")
        if password is None and ask:
            password = require(None, "--auth-password", "Basic-auth password", secret=True)
        _put(body, "password", password)
    elif token or user or password:
        raise UsageError("--auth none takes no token, user or password")
    return body


def _limits(
    existing: dict[str, Any], minute: int | None, hour: int | None, day: int | None
) -> dict[str, Any]:
    limits = {k: v for k, v in existing.items() if v is not None}
    for key, value in (("per_minute", minute), ("per_hour", hour), ("per_day", day)):
        if value is not None:
            if value < 0:
                raise UsageError(f"--{key.replace('_', '-')} must be 0 or more")
            limits[key] = value
    return limits


def _expiry(days: float) -> float:
    if days <= 0:
        raise UsageError("the expiry must be a positive number of days")
    return time.time() + days * 86400


def _print_secret(label: str, value: Any) -> None:
    if value:
        print(f"{label} (shown only now, store it safely):")
        print(f"  {value}")
