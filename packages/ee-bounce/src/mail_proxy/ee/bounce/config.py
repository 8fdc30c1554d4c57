"""What the bounce plugin is configured with, and where each tenant's bounces go.

Two levels, one model (:class:`BounceConfig`):

- the **instance** configuration (``GET|PUT /instance/bounce``) is stored as the ``bounce``
  tenant setting of the ``default`` tenant, through the core's generic tenant settings: the
  IMAP password is sealed with the instance key (and re-encrypted by key rotation) and never
  returned (``"password_set": true`` instead);
- a tenant may have its own ``bounce`` setting (``PUT /tenant-settings/bounce?tenant_id=``,
  admin only, with the multitenancy plugin): its own mailbox and return path. Without one, it
  uses the instance's. A tenant setting with ``"enabled": false`` turns bounce handling off
  for that tenant (no VERP, its bounces accepted in no mailbox).

The operator's knobs that are not per mailbox are a settings section (``GMP_BOUNCE_*``,
:class:`BounceSettings`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mail_proxy.core.contracts.config import positive, setting
from mail_proxy.core.contracts.model import DEFAULT_TENANT

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

#: The tenant setting (and settings section) name.
NAME = "bounce"
SECTION = "bounce"

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,40}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+")
_FOLDER = re.compile(r"[A-Za-z0-9._/ -]{1,200}")


class BounceConfig(BaseModel):
    """One bounce mailbox and return path (API.md "bounce")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str | None = Field(default=None, max_length=255)
    #: Default: 993 with ``use_tls``, else 143.
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=1024)
    folder: str = "INBOX"
    #: TLS from the first byte (IMAPS, port 993).
    use_tls: bool = True
    #: Plain connection upgraded with STARTTLS (port 143); required when true.
    starttls: bool = False
    poll_interval: float = Field(default=60.0, gt=0, le=1800)
    #: The bounce address (``bounces@example.com``): with it, every message's envelope
    #: sender becomes ``bounces+TOKEN@example.com`` (VERP, see verp.py).
    return_path: str | None = Field(default=None, max_length=120)
    #: Move each processed message there instead of flagging it ``\Seen``.
    processed_folder: str | None = None

    @field_validator("return_path")
    @classmethod
    def _return_path(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        local, at, domain = value.strip().rpartition("@")
        if not at or not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
            raise ValueError(
                "expected a plain ASCII address such as bounces@example.com "
                "(local part up to 40 characters: the VERP token is added to it)"
            )
        return f"{local}@{domain.lower()}"

    @field_validator("folder", "processed_folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _FOLDER.fullmatch(value):
            raise ValueError("folder names: ASCII letters, digits, space and . _ / -")
        return value

    @field_validator("host", "user")
    @classmethod
    def _no_controls(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 or c == "\x7f" for c in value):
            raise ValueError("control characters are not allowed")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> BounceConfig:
        if self.use_tls and self.starttls:
            raise ValueError("use_tls (implicit TLS) and starttls exclude each other")
        if self.enabled and not (self.host and self.user and self.password):
            raise ValueError("an enabled mailbox needs host, user and password")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.use_tls else 143)

    @property
    def polls(self) -> bool:
        """Whether a mailbox is to be polled for this configuration."""
        return bool(self.enabled and self.host and self.user and self.password)

    def mailbox_key(self) -> str:
        """The mailbox's identity (also its key in the state table): two configurations
        naming the same mailbox share one poller."""
        return f"{self.user}@{(self.host or '').lower()}:{self.effective_port}/{self.folder}"


#: Fields shown by the API (the password never: ``password_set`` instead).
PUBLIC_FIELDS = tuple(f for f in BounceConfig.model_fields if f != "password")


@dataclass
class BounceSettings:
    """The bounce plugin's operator settings (``[bounce]`` in the config file)."""

    bounce_max_message_bytes: int = setting(
        10 * 1024 * 1024,
        "GMP_BOUNCE_MAX_MESSAGE_BYTES",
        "Bounce mailbox: a message larger than this is not read (logged, left in the folder, "
        'counted in gmp_bounce_rejected_total{why="too_large"}).',
        positive(int),
    )
    bounce_batch_size: int = setting(
        200,
        "GMP_BOUNCE_BATCH_SIZE",
        "Bounce mailbox: messages fetched per batch; their events are committed together.",
        positive(int),
    )
    bounce_config_refresh: float = setting(
        30.0,
        "GMP_BOUNCE_CONFIG_REFRESH",
        "Seconds between two reads of the bounce configuration (changes made through another "
        "instance are applied within this time; this instance's own at once).",
        positive(float),
    )


class BounceConfigs:
    """Every tenant's effective bounce configuration, cached per runtime
    (``runtime.local(BounceConfigs)``), dropped when a tenant changes."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._own: dict[str, BounceConfig | None] = {}

    async def own(self, tenant_id: str) -> BounceConfig | None:
        """The tenant's own ``bounce`` setting (for ``default``: the instance's)."""
        if tenant_id not in self._own:
            from mail_proxy.core.engine.tenant_settings import TenantSettings

            found = await self.rt.local(TenantSettings).get(tenant_id, NAME)
            self._own[tenant_id] = found if isinstance(found, BounceConfig) else None
        return self._own[tenant_id]

    async def instance(self) -> BounceConfig | None:
        return await self.own(DEFAULT_TENANT)

    async def effective(self, tenant_id: str) -> BounceConfig | None:
        """The configuration that applies to ``tenant_id`` (its own, else the instance's),
        None when bounce handling is off for it."""
        own = await self.own(tenant_id)
        if own is None and tenant_id != DEFAULT_TENANT:
            own = await self.instance()
        return own if own is not None and own.enabled else None

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop the cache of one tenant (None: of all)."""
        if tenant_id is None:
            self._own.clear()
        else:
            self._own.pop(tenant_id, None)

    async def mailboxes(self) -> dict[str, BounceConfig]:
        """The mailboxes to poll now, by key (the instance's first, then tenants' own)."""
        found: dict[str, BounceConfig] = {}
        instance = await self.instance()
        if instance is not None and instance.polls:
            found[instance.mailbox_key()] = instance
        for tenant_id in await self._other_tenants():
            own = await self.own(tenant_id)
            if own is not None and own.polls:
                found.setdefault(own.mailbox_key(), own)
        return found

    async def _other_tenants(self) -> list[str]:
        tenants = [t.id for t in await self.rt.storage.list_tenants()]
        return sorted(t for t in tenants if t != DEFAULT_TENANT)


def public_view(stored: dict[str, Any] | None) -> dict[str, Any]:
    """What ``GET /instance/bounce`` shows of a stored (sealed) value: every field with its
    default, the password as ``password_set``."""
    values = BounceConfig().model_dump()
    data = dict(stored or {})
    password = data.pop("password", None)
    values.update({k: v for k, v in data.items() if k in PUBLIC_FIELDS})
    values.pop("password", None)
    values["port"] = values.get("port") or (993 if values.get("use_tls", True) else 143)
    values["password_set"] = password is not None
    return values
