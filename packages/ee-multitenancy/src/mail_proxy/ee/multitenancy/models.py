"""Request models of the tenant routes (pydantic): they validate and feed ``/openapi.json``.

The tenant configuration (API.md "Plugin routes") is validated here, field by field, so a bad
value is a 400 ``validation_error`` naming the field. ``TenantUpdate`` has every field
optional: only the fields present in the body change, and ``null`` clears one.

Any other field of a tenant body is a plugin's tenant setting (``register_tenant_settings``,
e.g. ``large_file_config``): the models let it through (``model_extra``) and the routes hand
it to the core's :class:`~mail_proxy.core.engine.tenant_settings.TenantSettings`, which
validates it with the model of the plugin that declares it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mail_proxy.core.contracts.model import DEFAULT_ATTACHMENT_PATH, DEFAULT_SYNC_PATH

#: Tenant ids appear in URL paths, rate-limit bucket names and CLI arguments: a safe alphabet
#: (the CLI's own name rule: letters, digits, '.', '_', '-', up to 63 characters).
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
TenantId = Annotated[str, Field(pattern=TENANT_ID_PATTERN)]
Epoch = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Limit = Annotated[int, Field(ge=0, le=10**9)]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


class _Strict(BaseModel):
    """JSON types exactly as documented, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


def check_http_url(value: str, what: str) -> str:
    """An absolute http(s) URL with a host, no credentials, no query or fragment.

    A trailing ``/`` is dropped so that ``base + path`` never doubles it. Whether the host
    may be reached is decided at connection time by the address policy
    (``GMP_FETCH_ALLOW_NETWORKS``), not here.
    """
    if _SPACE_OR_CONTROL.search(value):
        raise ValueError(f"{what} may not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"{what} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} may not carry credentials (use client_auth)")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError(f"{what} may not have a query string or a fragment")
    del port
    return value.rstrip("/")


def check_path(value: str, what: str) -> str:
    """A path appended to ``client_base_url``: starts with one ``/``, no spaces."""
    if not value.startswith("/") or value.startswith("//"):
        raise ValueError(f"{what} must start with a single '/'")
    if _SPACE_OR_CONTROL.search(value) or "#" in value:
        raise ValueError(f"{what} may not contain spaces, control characters or '#'")
    return value


class ClientAuth(_Strict):
    """How the proxy authenticates to the tenant's endpoints (reports, attachments).

    Secrets (``token``, ``password``) are stored encrypted and never returned. On update a
    secret may be omitted to keep the stored one of the same method.
    """

    method: Literal["none", "bearer", "basic"]
    token: str | None = Field(None, min_length=1, max_length=4096, description="bearer")
    user: str | None = Field(None, min_length=1, max_length=255, description="basic")
    password: str | None = Field(None, min_length=1, max_length=4096, description="basic")

    @field_validator("token", "password")
    @classmethod
    def _no_control(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("may not contain control characters")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and (_CONTROL.search(value) or ":" in value):
            raise ValueError("may not contain ':' or control characters")
        return value

    @model_validator(mode="after")
    def _fields_of_method(self) -> ClientAuth:
        allowed = {"none": set(), "bearer": {"token"}, "basic": {"user", "password"}}[self.method]
        extra = sorted(
            name
            for name in ("token", "user", "password")
            if getattr(self, name) is not None and name not in allowed
        )
        if extra:
            raise ValueError(f"method {self.method!r} takes no {', '.join(extra)}")
        if self.method == "basic" and self.user is None:
            raise ValueError("method 'basic' needs a user")
        return self


class TenantRateLimits(_Strict):
    """Tenant-wide quotas, applied by the dispatcher on top of each account's limits
    (0 or absent = no limit)."""

    per_minute: Limit | None = None
    per_hour: Limit | None = None
    per_day: Limit | None = None


class _TenantFields(_Strict):
    """The configurable fields shared by create and update. Any other field is the tenant
    setting of that name of an installed plugin (``GET /tenant-settings`` lists them, e.g.
    ``large_file_config`` of the large-files plugin), validated by that plugin."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str | None = Field(None, min_length=1, max_length=255)
    client_base_url: str | None = Field(
        None, max_length=2048, description="http(s) base of the tenant's endpoints"
    )
    client_sync_path: str | None = Field(
        None, max_length=1024, description=f"delivery reports (default {DEFAULT_SYNC_PATH})"
    )
    client_attachment_path: str | None = Field(
        None,
        max_length=1024,
        description=f"endpoint attachments (default {DEFAULT_ATTACHMENT_PATH})",
    )
    client_auth: ClientAuth | None = None
    rate_limits: TenantRateLimits | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("may not contain control characters")
        return value

    @field_validator("client_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "client_base_url")

    @field_validator("client_sync_path", "client_attachment_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else check_path(value, "path")


class TenantCreate(_TenantFields):
    """``POST /tenant``: a new tenant; its API key and report-signing secret come back once.

    Any other field is the tenant setting of that name of an installed plugin (e.g.
    ``large_file_config``), validated by that plugin."""

    id: TenantId
    active: bool = True
    api_key_expires_at: Epoch | None = Field(
        None, description="the first API key stops working at this time (epoch seconds)"
    )


class TenantUpdate(_TenantFields):
    """``PUT /tenant/{id}``: only the fields given change; ``null`` clears a field. Any
    other field is the tenant setting of that name of an installed plugin, replaced as a whole
    (``null`` removes it).

    ``active``, ``rate_limits`` and the plugin settings declared ``admin_only`` are set by
    the admin only (a tenant may not lift its own quotas or choose server-side storage).
    """

    #: Omitted: unchanged (None). Not nullable: the schema says boolean, null is refused.
    active: bool = None  # type: ignore[assignment]


ADMIN_ONLY_FIELDS = frozenset({"active", "rate_limits"})


class ApiKeyBody(_Strict):
    """``POST /tenant/{id}/api-key``: optional expiry of the new key (body may be empty)."""

    expires_at: Epoch | None = Field(None, description="epoch seconds; absent = never")


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TenantsQuery(_Query):
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, description="next_cursor of the previous page")


def dump(model: BaseModel | None) -> dict[str, Any] | None:
    """A nested config model as stored (``None`` stays ``None``)."""
    return None if model is None else model.model_dump()
