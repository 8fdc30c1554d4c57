"""``serve`` (foreground container entry), ``keygen`` and ``plugins``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mail_proxy.core.cli.output import print_json, print_table


def serve(*, require_key: bool = False) -> int:
    """Run the server in the foreground, configured by GMP_* variables only (containers).

    No instance directory is needed: GMP_API_TOKEN, GMP_DATABASE_URL (or GMP_DB_PATH),
    GMP_HOST, GMP_PORT... as in docs/configuration.md. A secret may be a file instead:
    GMP_API_TOKEN_FILE=/path, or /run/secrets/api_token (any setting by its name). Logs go to
    stderr. Exit 2 on a configuration error (no admin token, a bad value).

    Parameters
    ----------
    require_key
        Refuse to start without an encryption key (MAIL_PROXY_ENCRYPTION_KEY, its _FILE, or
        /run/secrets/encryption_key) instead of starting unable to store passwords.
    """
    from mail_proxy.core.cli.serve import serve_env

    return serve_env(require_key=require_key)


def keygen() -> int:
    """Print a new encryption key (base64 of 32 random bytes) for MAIL_PROXY_ENCRYPTION_KEY."""
    from mail_proxy.core.engine.encryption import generate_key

    print(generate_key())
    return 0


#: What each plugin adds, by the registration hook that adds it.
_ADDS = {
    "storage_backends": ("register_storage_backends", "registry", "storage backend"),
    "fetch_modes": ("register_fetchers", "registry", "fetch mode"),
    "transports": ("register_transports", "registry", "transport"),
    "report_sinks": ("register_report_sinks", "registry", "report sink"),
    "services": ("register_services", "services", "service"),
    "settings_sections": ("register_settings", "sections", "settings section"),
    "migration_branches": ("register_migrations", "branches", "migration branch"),
    "tenant_settings": ("register_tenant_settings", "settings", "tenant setting"),
    "account_fields": ("register_account_fields", "fields", "account fields"),
    "event_types": ("register_event_types", "event_types", "event type"),
    "message_steps": ("register_message_steps", "steps", "message step"),
}


def plugins(*, json: bool = False) -> int:
    """List the installed plugins (less ``GMP_DISABLED_PLUGINS``): distribution, version,
    edition, hooks and what they add.

    Parameters
    ----------
    json
        Print JSON: {"plugins": [{"name", "distribution", "version", "edition", "hooks",
        "description", "adds": {...}}]}.
    """
    import os

    from mail_proxy.core.plugins.loader import create_plugin_manager

    disabled = [n.strip() for n in os.environ.get("GMP_DISABLED_PLUGINS", "").split(",")]
    pm = create_plugin_manager(disabled=[n for n in disabled if n])
    adds = collect_additions(pm)
    rows = []
    for info in pm.plugins():
        row = info.public()
        row["adds"] = {k: v for k, v in adds.get(info.name, {}).items() if v}
        rows.append(row)
    if json:
        print_json({"plugins": rows})
        return 0
    for row in rows:
        row["adds_text"] = "; ".join(f"{k}: {', '.join(v)}" for k, v in row["adds"].items())
    cols = [
        ("name", "NAME"),
        ("distribution", "DISTRIBUTION"),
        ("version", "VERSION"),
        ("edition", "EDITION"),
        ("hooks", "HOOKS"),
    ]
    print_table(rows, cols)
    for row in rows:
        if row["adds_text"]:
            print(f"\n{row['name']} adds: {row['adds_text']}")
    return 0


def collect_additions(pm: Any) -> dict[str, dict[str, list[str]]]:
    """Call the registration hooks into fresh registries and group the names by owner."""
    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.plugins.registry import Registry

    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for key, (hook, arg, kind) in _ADDS.items():
        registry: Registry[Any] = Registry(kind)
        pm.fill(hook, arg, registry)
        for name in registry:
            if not registry.is_placeholder(name):
                out[registry.owner(name)][key].append(name)
    commands = CommandRegistry()
    pm.register_commands(commands)
    for spec in commands.all():
        label = spec.name if spec.level == "global" else f"{spec.level}:{spec.name}"
        out[spec.plugin]["commands"].append(label)
    routes = RouteTable()
    pm.register_routes(routes)
    for route in routes:
        out[route.plugin]["routes"].append(f"{route.method} {route.path}")
    return out
