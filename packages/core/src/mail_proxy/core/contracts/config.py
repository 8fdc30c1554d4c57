"""Configuration: defaults → instance config file → ``GMP_*`` environment variables.

Every setting is declared once below, with its environment variable, type and meaning; the
table in docs/configuration.md is checked against this list by a test. Invalid values are a
:class:`~mail_proxy.core.contracts.errors.ConfigError` at startup naming the bad key; unknown keys in
the config file are errors too (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mail_proxy.core.contracts.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def parse_float_list(raw: Any) -> list[float]:
    if isinstance(raw, list | tuple):
        values = [float(v) for v in raw]
    else:
        values = [float(v) for v in str(raw).split(",") if v.strip()]
    if not values or any(v < 0 for v in values):
        raise ValueError("expected comma-separated non-negative seconds, e.g. 60,300,900")
    return values


def parse_str_list(sep: str) -> Callable[[Any], list[str]]:
    def parse(raw: Any) -> list[str]:
        if isinstance(raw, list | tuple):
            return [str(v) for v in raw if str(v)]
        return [v.strip() for v in str(raw).split(sep) if v.strip()]

    return parse


def positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        value = kind(raw)
        if value <= 0:
            raise ValueError(f"must be greater than 0, got {value}")
        return value

    return parse


def non_negative(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        value = kind(raw)
        if value < 0:
            raise ValueError(f"must be 0 or more, got {value}")
        return value

    return parse


def parse_log_level(raw: Any) -> str:
    value = str(raw).upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def parse_opt_str(raw: Any) -> str | None:
    text = str(raw).strip()
    return text or None


def setting(
    default: Any,
    env: str,
    doc: str,
    parse: Callable[[Any], Any] = str,
    *,
    factory: Callable[[], Any] | None = None,
) -> Any:
    meta = {"env": env, "doc": doc, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """All runtime settings. Build with :func:`load_settings`."""

    # -- identity and HTTP -----------------------------------------------------------
    instance_name: str = setting(
        "mail-proxy", "GMP_INSTANCE_NAME", "Instance name shown by /status."
    )
    instance_dir: str | None = setting(
        None,
        "GMP_INSTANCE_DIR",
        "Directory holding the instance's SQLite database, key and logs "
        "(default: current directory for `serve`).",
        parse_opt_str,
    )
    host: str = setting("127.0.0.1", "GMP_HOST", "Address the HTTP server listens on.")
    port: int = setting(8000, "GMP_PORT", "HTTP port.", positive(int))
    api_token: str | None = setting(
        None,
        "GMP_API_TOKEN",
        "Admin token (X-API-Token), at least 16 characters. Required unless GMP_INSECURE=1.",
        parse_opt_str,
    )
    insecure: bool = setting(
        False,
        "GMP_INSECURE",
        "Run without an admin token (prints a warning; never in production).",
        parse_bool,
    )
    log_level: str = setting("INFO", "GMP_LOG_LEVEL", "Logging level.", parse_log_level)
    max_request_bytes: int = setting(
        10 * 1024 * 1024,
        "GMP_MAX_REQUEST_BYTES",
        "Largest accepted request body (413 beyond).",
        positive(int),
    )
    max_batch_messages: int = setting(
        1000,
        "GMP_MAX_BATCH_MESSAGES",
        "Most messages in one add-messages call (413 beyond).",
        positive(int),
    )
    max_recipients: int = setting(
        1000,
        "GMP_MAX_RECIPIENTS",
        "Most recipients (to + cc + bcc) of one message; a message with more is rejected.",
        positive(int),
    )
    disabled_plugins: list[str] = setting(
        None,
        "GMP_DISABLED_PLUGINS",
        "Comma-separated plugin names not to load.",
        parse_str_list(","),
        factory=list,
    )

    # -- database ----------------------------------------------------------------------
    database_url: str | None = setting(
        None,
        "GMP_DATABASE_URL",
        "Database URL: sqlite:///path or postgresql://user@host/db. Overrides GMP_DB_PATH.",
        parse_opt_str,
    )
    db_path: str | None = setting(
        None,
        "GMP_DB_PATH",
        "SQLite file (default: mail_proxy.db in the instance directory).",
        parse_opt_str,
    )

    # -- dispatch ----------------------------------------------------------------------
    scheduler_active: bool = setting(
        True,
        "GMP_SCHEDULER_ACTIVE",
        "Start with the dispatcher running (false = suspended).",
        parse_bool,
    )
    test_mode: bool = setting(
        False,
        "GMP_TEST_MODE",
        "Loops wait for POST /commands/run-now instead of polling.",
        parse_bool,
    )
    send_loop_interval: float = setting(
        0.5, "GMP_SEND_LOOP_INTERVAL", "Idle dispatcher poll interval (seconds).", positive(float)
    )
    intake_priority_max_hold: float = setting(
        1.0,
        "GMP_INTAKE_PRIORITY_MAX_HOLD",
        "While many messages are being accepted at once, the dispatcher holds new claims for "
        "at most this long at a time (seconds; 0 = no intake priority).",
        non_negative(float),
    )
    batch_size_per_account: int = setting(
        50,
        "GMP_BATCH_SIZE_PER_ACCOUNT",
        "Most messages claimed per account in one round.",
        positive(int),
    )
    claim_batch_size: int = setting(
        500,
        "GMP_CLAIM_BATCH_SIZE",
        "Most messages claimed in one round (all accounts).",
        positive(int),
    )
    max_concurrent_sends: int = setting(
        200,
        "GMP_MAX_CONCURRENT_SENDS",
        "Global bound on deliveries in flight (and, separately, on outcomes not yet committed).",
        positive(int),
    )
    max_sends_per_account: int = setting(
        100,
        "GMP_MAX_SENDS_PER_ACCOUNT",
        "Upper bound on deliveries in flight per account; an account uses the smaller of this "
        "and its max_connections.",
        positive(int),
    )
    claim_lease_seconds: float = setting(
        300.0,
        "GMP_CLAIM_LEASE_SECONDS",
        "How long a claimed message belongs to an instance before others may retake it.",
        positive(float),
    )
    max_retries: int = setting(
        5,
        "GMP_MAX_RETRIES",
        "Retries of a temporary failure before the message fails.",
        non_negative(int),
    )
    retry_delays: list[float] = setting(
        None,
        "GMP_RETRY_DELAYS",
        "Comma-separated backoff delays in seconds for retry 1, 2, ... (last one repeats).",
        parse_float_list,
        factory=lambda: [60.0, 300.0, 900.0, 3600.0, 7200.0],
    )
    retry_jitter: float = setting(
        0.1,
        "GMP_RETRY_JITTER",
        "Random spread added to each retry delay (fraction).",
        non_negative(float),
    )

    # -- attachments -------------------------------------------------------------------
    attachment_timeout: float = setting(
        30.0,
        "GMP_ATTACHMENT_TIMEOUT",
        "Timeout of one attachment fetch (seconds).",
        positive(float),
    )
    attachment_max_mb: float = setting(
        25.0, "GMP_ATTACHMENT_MAX_MB", "Largest attachment accepted (MB).", positive(float)
    )
    attachment_memory_budget_mb: float = setting(
        128.0,
        "GMP_ATTACHMENT_MEMORY_BUDGET_MB",
        "Memory reserved for messages with attachments being built and sent (MB); each "
        "reserves about 4x its attachments' size, large ones take turns.",
        positive(float),
    )
    max_concurrent_attachments: int = setting(
        8,
        "GMP_MAX_CONCURRENT_ATTACHMENTS",
        "Attachment fetches in flight (all messages).",
        positive(int),
    )
    cache_memory_max_mb: float = setting(
        50.0, "GMP_CACHE_MEMORY_MAX_MB", "Memory attachment cache size (MB).", non_negative(float)
    )
    cache_memory_item_max_kb: float = setting(
        512.0,
        "GMP_CACHE_MEMORY_ITEM_MAX_KB",
        "Items up to this size go to the memory tier, larger ones to disk (KB).",
        non_negative(float),
    )
    cache_memory_ttl: float = setting(
        300.0, "GMP_CACHE_MEMORY_TTL", "Memory cache entry lifetime (seconds).", positive(float)
    )
    cache_disk_dir: str | None = setting(
        None,
        "GMP_CACHE_DISK_DIR",
        "Directory of the disk attachment cache (unset = no disk tier).",
        parse_opt_str,
    )
    cache_disk_max_mb: float = setting(
        500.0, "GMP_CACHE_DISK_MAX_MB", "Disk attachment cache size (MB).", non_negative(float)
    )
    cache_disk_ttl: float = setting(
        3600.0, "GMP_CACHE_DISK_TTL", "Disk cache entry lifetime (seconds).", positive(float)
    )

    # -- delivery reports ----------------------------------------------------------------
    sync_interval: float = setting(
        300.0,
        "GMP_SYNC_INTERVAL",
        "Heartbeat interval of delivery-report sync (seconds).",
        positive(float),
    )
    sync_timeout: float = setting(
        30.0,
        "GMP_SYNC_TIMEOUT",
        "Timeout of one delivery-report request (seconds).",
        positive(float),
    )
    report_batch_size: int = setting(
        500, "GMP_REPORT_BATCH_SIZE", "Most events in one delivery-report request.", positive(int)
    )
    report_retention_seconds: float = setting(
        7 * 86400.0,
        "GMP_DELIVERY_REPORT_RETENTION_SECONDS",
        "Finished, fully reported messages are purged after this long.",
        positive(float),
    )

    # -- secrets ---------------------------------------------------------------------------
    encryption_key: str | None = setting(
        None,
        "MAIL_PROXY_ENCRYPTION_KEY",
        "Base64 of 32 bytes (AES-256-GCM) for stored secrets; else /run/secrets/encryption_key, "
        "else the instance's encryption.key file.",
        parse_opt_str,
    )

    # -- plugin sections (bound by the runtime, see bind_sections) ----------------------
    _sources: _Sources = field(default_factory=lambda: _Sources(), repr=False, compare=False)
    _sections: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def section(self, name: str) -> Any:
        """The settings of the plugin section ``name`` (declared with ``register_settings``)."""
        try:
            return self._sections[name]
        except KeyError:
            raise ConfigError(name, "no installed plugin declares this settings section") from None

    def bind_sections(self, sections: Mapping[str, type]) -> None:
        """Build each plugin section from the same sources as the core settings (config file,
        environment, overrides); a key that neither the core nor a section declares is a
        :class:`ConfigError` (a typo must not be silently ignored)."""
        src = self._sources
        claimed: set[str] = set()
        for name, cls in sections.items():
            table = src.tables.get(name, {})
            values: dict[str, Any] = {}
            for f in fields(cls):
                if "env" not in f.metadata:
                    continue
                for raw_source, key in ((src.flat, f.name), (table, f.name)):
                    if key in raw_source:
                        values[f.name] = _parse(f, raw_source[key], key)
                        claimed.add(f.name)
                if f.metadata["env"] in src.env:
                    values[f.name] = _parse(f, src.env[f.metadata["env"]], f.metadata["env"])
                if f.name in src.overrides:
                    values[f.name] = src.overrides[f.name]
                    claimed.add(f.name)
            self._sections[name] = cls(**values)
        unknown = sorted(
            [k for k in (*src.flat, *src.overrides) if k not in claimed]
            + [f"[{t}]" for t in src.tables if t not in sections]
        )
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting{src.where}")

    # ---------------------------------------------------------------------------------------
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the instance directory."""
        if self.database_url:
            return self.database_url
        path = self.db_path or os.path.join(self.instance_dir or ".", "mail_proxy.db")
        return f"sqlite:///{os.path.abspath(path)}"

    @property
    def attachment_max_bytes(self) -> int:
        return int(self.attachment_max_mb * 1024 * 1024)


@dataclass
class _Sources:
    """What :func:`load_settings` read but the core does not declare: kept for the plugin
    sections (bound once the plugins are known)."""

    flat: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    where: str = ""


def setting_fields(cls: type = Settings) -> list[dataclasses.Field[Any]]:
    """The declared settings of ``cls`` (core's :class:`Settings` or a plugin section)."""
    return [f for f in fields(cls) if "env" in f.metadata]


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from defaults, then ``config_file`` (TOML, keys = field names), then
    the environment, then ``overrides`` (already-typed values from the CLI)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    by_name = {f.name: f for f in setting_fields()}
    sources = _Sources(env={k: v for k, v in env.items() if k.startswith("GMP_")})

    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(str(path), "config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
        sources.where = f" in {path}"
        for key, raw in data.items():
            if isinstance(raw, dict):
                sources.tables[key] = raw  # a plugin section's [table]
            elif key in by_name:
                values[key] = _parse(by_name[key], raw, key)
            else:
                sources.flat[key] = raw  # a plugin section's key, or a typo: bind_sections

    for f in setting_fields():
        name = f.metadata["env"]
        if name in env:
            values[f.name] = _parse(f, env[name], name)

    for key, value in (overrides or {}).items():
        if key in by_name:
            values[key] = value
        else:
            sources.overrides[key] = value

    settings = Settings(**values, _sources=sources)
    if settings.max_retries > 0 and not settings.retry_delays:
        raise ConfigError("GMP_RETRY_DELAYS", "at least one delay is needed")
    return settings


def _parse(f: dataclasses.Field[Any], raw: Any, key: str) -> Any:
    try:
        return f.metadata["parse"](raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, f"invalid value {raw!r}: {exc}") from None
