"""A fetch-mode plugin for genro-mail-proxy: attachment content kept in a JSON "vault" file.

``storage_path`` names an entry of the JSON object stored in the file ``GMP_VAULT_FILE``
(``{"<name>": "<base64 content>", ...}``). The file is read at every fetch (in a worker
thread, so the event loop never blocks) which keeps the example free of cache logic: the
proxy's own attachment cache already applies to any fetch mode via the ``{MD5:...}`` marker.

Wiring: the ``mail_proxy`` entry point named ``vault`` points to this module; the plugin
manager registers it and calls :func:`register_fetchers` once per runtime.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.fetch import Fetcher, FetchError, FetchRequest
from mail_proxy.core.plugins import hookimpl
from mail_proxy.core.plugins.registry import Registry

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

MODE = "vault"
ENV = "GMP_VAULT_FILE"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,199}")


def _load_entry(path: str, name: str, max_bytes: int) -> bytes:
    """Blocking: read the vault file and decode one entry."""
    try:
        with open(path, encoding="utf-8") as fh:
            vault = json.load(fh)
    except FileNotFoundError:
        raise FetchError(f"vault file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"vault file {path} unreadable: {exc}") from None
    encoded = vault.get(name) if isinstance(vault, dict) else None
    if not isinstance(encoded, str):
        raise FetchError(f"no vault entry {name!r}")
    if len(encoded) // 4 * 3 > max_bytes + 2:
        raise FetchError(f"vault entry {name!r} is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise FetchError(f"vault entry {name!r} is not valid base64") from None


class VaultFetcher(Fetcher):
    """Fetch mode ``vault``: ``storage_path`` is an entry name of the vault file."""

    description = f"attachments from the JSON vault file named by {ENV}"

    def validate(self, storage_path: str, runtime: Runtime) -> str | None:
        # Runs at enqueue: cheap checks only, no I/O.
        if not _NAME.fullmatch(storage_path) or ".." in storage_path:
            return "vault entry names are letters, digits and _ . / - (no '..')"
        return None

    async def fetch(self, request: FetchRequest, runtime: Runtime) -> bytes:
        path = os.environ.get(ENV)
        if not path:
            raise FetchError(f"{ENV} is not set")
        return await asyncio.to_thread(_load_entry, path, request.storage_path, request.max_bytes)


@hookimpl
def register_fetchers(registry: Registry[Fetcher]) -> None:
    registry.register(MODE, VaultFetcher(), plugin="vault")


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {"description": "Example fetch mode 'vault' (JSON vault file)", "edition": "third-party"}
