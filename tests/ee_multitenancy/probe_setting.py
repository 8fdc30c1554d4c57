"""A tiny plugin for the tests: two tenant settings, as a third-party plugin would declare them.

- ``probe_config``: admin only, with a secret member (``token``) and a bounded ``level``;
- ``probe_note``: a tenant may set it with its own key.

In-process it is registered with ``create_plugin_manager(extra_plugins=[(NAME, module)])``
(:func:`plugins`); for a service started in a subprocess, :func:`site_dir` writes a
``*.dist-info`` with its entry point into a directory to put on ``PYTHONPATH``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mail_proxy.core.contracts.extensions import TenantSetting
from mail_proxy.core.plugins import hookimpl

NAME = "probe"
#: The tests' directory: where this module is importable from (``ee_multitenancy.probe_setting``).
TESTS = Path(__file__).resolve().parents[1]


class ProbeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: int = Field(1, ge=1, le=5)
    label: str = "probe"
    token: str | None = Field(None, min_length=1)


class ProbeNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=100)


@hookimpl
def register_tenant_settings(settings: Any) -> None:
    settings.register(
        "probe_config",
        TenantSetting(
            "probe_config",
            ProbeConfig,
            secret_fields=("token",),
            doc="the probe's configuration",
            plugin=NAME,
        ),
        plugin=NAME,
    )
    settings.register(
        "probe_note",
        TenantSetting("probe_note", ProbeNote, admin_only=False, doc="a note", plugin=NAME),
        plugin=NAME,
    )


def plugins(**kwargs: Any) -> Any:
    """A plugin manager with the installed plugins plus this one."""
    from mail_proxy.core.plugins.loader import create_plugin_manager

    return create_plugin_manager(extra_plugins=[(NAME, sys.modules[__name__])], **kwargs)


def site_dir(directory: Path) -> str:
    """Make ``directory`` hold this plugin's distribution metadata (entry point ``probe``) and
    return the ``PYTHONPATH`` that makes a subprocess load it."""
    info = directory / "gmp_probe_setting-0.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gmp-probe-setting\nVersion: 0.0.0\n"
    )
    (info / "entry_points.txt").write_text(
        f"[mail_proxy]\n{NAME} = ee_multitenancy.probe_setting\n"
    )
    return f"{directory}:{TESTS}"
