"""``large_file_config``: a tenant's large-attachment policy, and the checks a storage URL
must pass before it is stored.

``{"enabled", "max_size_mb", "action": "warn"|"reject"|"rewrite", "storage_url",
"storage_options", "public_base_url", "file_ttl_days", "link_text"}``. The model refuses an
unknown protocol and a protocol whose fsspec driver is not installed at once; reaching the
storage itself (write, read and delete a probe object) is the async check that runs before
the value is stored (:func:`mail_proxy.ee.largefiles.storage.probe`).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

NAME = "large_file_config"
MB = 1024 * 1024
#: protocol → the ``genro-mail-proxy[large-files-*]`` extra that installs its fsspec driver.
EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
}
#: fsspec protocols that can read but not store files (or wrap other filesystems).
READ_ONLY = frozenset(
    {"http", "https", "zip", "tar", "github", "git", "libarchive", "reference", "data", "jlab"}
    | {"cached", "blockcache", "filecache", "simplecache", "dir"}
)
Action = Literal["warn", "reject", "rewrite"]


def storage_problem(url: str) -> str | None:
    """Why ``url`` cannot be a storage location (protocol unknown, driver missing, read-only,
    no bucket or no absolute path), or None. Does not reach the storage."""
    from fsspec.core import split_protocol
    from fsspec.registry import get_filesystem_class, known_implementations, registry

    if "::" in url:
        return "chained URLs (a::b) are not supported"
    protocol, path = split_protocol(url)
    protocol = protocol or "file"
    if protocol not in known_implementations and protocol not in registry:
        return (
            f"unknown storage protocol {protocol!r} (e.g. s3://bucket/prefix, gs://bucket, "
            "az://container, file:///srv/files)"
        )
    if protocol in READ_ONLY:
        return f"{protocol}:// storage cannot store files"
    try:
        get_filesystem_class(protocol)
    except ImportError:
        extra = EXTRAS.get(protocol)
        package = known_implementations.get(protocol, {}).get("class", "").split(".")[0]
        how = (
            f"pip install 'genro-mail-proxy[large-files-{extra}]'"
            if extra
            else f"install the {package or protocol} package"
        )
        return f"{protocol}:// needs its fsspec driver, which is not installed ({how})"
    except ValueError as exc:
        return f"unknown storage protocol {protocol!r}: {exc}"
    if protocol in ("file", "local"):
        if not path.startswith("/"):
            return "a local storage_url needs an absolute path (file:///srv/files)"
    elif protocol != "memory" and not path.strip("/"):
        return f"{protocol}:// storage_url needs a bucket or container ({protocol}://bucket/prefix)"
    return None


def _refuse(text: str) -> PydanticCustomError:
    return PydanticCustomError("large_file_config", "{reason}", {"reason": text})


class LargeFileConfig(BaseModel):
    """The ``large_file_config`` tenant setting (``storage_options`` is sealed at rest)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_size_mb: float = Field(25.0, gt=0, le=1_000_000, allow_inf_nan=False)
    action: Action = "warn"
    storage_url: str | None = Field(None, max_length=2048)
    storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options: credentials, endpoint (stored encrypted)"
    )
    public_base_url: str | None = Field(None, max_length=2048)
    file_ttl_days: float = Field(30.0, gt=0, le=3650, allow_inf_nan=False)
    link_text: str | None = Field(None, max_length=500)

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        problem = storage_problem(value)
        if problem:
            raise _refuse(problem)
        return value.rstrip("/") or value

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _refuse("public_base_url must be an http:// or https:// URL")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise _refuse("public_base_url takes no query, fragment or credentials")
        return value.strip().rstrip("/")

    @field_validator("link_text")
    @classmethod
    def _link_text(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 for c in value):
            raise _refuse("link_text must be one line (no control characters)")
        return value

    @model_validator(mode="after")
    def _rewrite_needs_storage(self) -> LargeFileConfig:
        if self.action == "rewrite" and not self.storage_url:
            raise _refuse("action 'rewrite' needs a storage_url")
        return self

    @property
    def limit_bytes(self) -> int:
        return int(self.max_size_mb * MB)

    @property
    def ttl_seconds(self) -> float:
        return self.file_ttl_days * 86400.0

    @property
    def offloads(self) -> bool:
        """True when attachments over the limit go to the storage."""
        return self.enabled and self.action == "rewrite" and bool(self.storage_url)


def shown_mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def over_limit(number: int, size: int, config: LargeFileConfig) -> str:
    """``attachment 2: 83.2 MB is over the 25 MB limit``."""
    return f"attachment {number}: {shown_mb(size)} is over the {config.max_size_mb:g} MB limit"


def declared_size(att: dict[str, Any]) -> int | None:
    """An attachment's size as the message tells it, before anything is fetched: its ``size``
    field, or the decoded length of inline base64 content; None when unknown."""
    size = att.get("size")
    if isinstance(size, int) and size >= 0:
        return size
    path = att.get("storage_path")
    mode = att.get("fetch_mode")
    if isinstance(path, str) and (
        mode == "base64" or (mode is None and path.startswith("base64:"))
    ):
        text = path.removeprefix("base64:")
        return max(0, len(text) * 3 // 4 - text[-2:].count("="))
    return None
