"""Every hook is documented and used: a docstring saying when it is called, an entry in
docs/plugins.md with its arguments, and at least one implementation in a plugin that is
installed by entry point (the Community Edition, the enterprise plugins, the test plugins
and the worked example in tests/plugins/gmp_example), whose tests call it through the
running service."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mail_proxy.core.plugins import hookspecs
from mail_proxy.core.plugins.loader import create_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "mail_proxy_spec"))


def test_the_hook_list_is_what_docs_and_plugins_expect() -> None:
    assert len(SPECS) >= 18


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_documented_with_its_arguments(name: str) -> None:
    spec = getattr(hookspecs, name)
    assert (spec.__doc__ or "").strip(), f"hook {name} has no docstring"
    args = ", ".join(inspect.signature(spec).parameters)
    doc = (ROOT / "docs" / "plugins.md").read_text()
    assert f"`{name}({args})`" in doc, f"docs/plugins.md does not list `{name}({args})`"


def test_every_hook_has_an_implementation_installed_by_entry_point() -> None:
    pytest.importorskip("gmp_example", reason="the worked example plugin is not installed")
    pm = create_plugin_manager()
    by_entry_point = {h for p in pm.plugins() if p.name != "core" for h in p.hooks}
    missing = set(SPECS) - by_entry_point
    assert not missing, f"hooks no installed plugin implements: {sorted(missing)}"
