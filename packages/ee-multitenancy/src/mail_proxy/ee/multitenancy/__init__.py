"""Multitenancy for genro-mail-proxy (Enterprise Edition, BSL-1.1).

Many tenants in one instance, each with its own SMTP accounts, API key (tenant scope),
delivery-report endpoint and authentication, attachment endpoint, quotas and suspension.

The plugin is found through the ``mail_proxy`` entry point ``multitenancy`` and plugs into the
core with ordinary hooks (:mod:`.plugin`): ``register_routes`` (tenant management, see
:mod:`.routes`), ``authenticate`` (tenant API keys, see :mod:`.auth`) and
``register_commands`` (``mail-proxy NAME tenants ...``, see :mod:`.cli`). Scope enforcement
and tenant binding are not here: the core's guard does them for every route, so isolation
does not depend on each handler remembering to check.
"""
