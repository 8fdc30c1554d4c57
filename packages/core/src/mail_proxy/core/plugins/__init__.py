"""Plugins: the hook specifications, the manager that finds and calls plugins, registries.

A plugin needs only ``from mail_proxy.core.plugins import hookimpl`` and the hook list in
:mod:`.hookspecs`.
"""

from mail_proxy.core.plugins.manager import hookimpl

__all__ = ["hookimpl"]
