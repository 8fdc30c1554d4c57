"""The kernel: registries, plugin manager checks, configuration, encryption, boundaries."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.core.contracts.config import load_settings, setting_fields
from mail_proxy.core.contracts.errors import ConfigError
from mail_proxy.core.engine.encryption import (
    Cipher,
    EncryptionError,
    generate_key,
    load_key,
    parse_key,
    secret_context,
)
from mail_proxy.core.plugins.loader import create_plugin_manager
from mail_proxy.core.plugins.manager import PluginError, hookimpl
from mail_proxy.core.plugins.registry import Registry, RegistryError

ROOT = Path(__file__).resolve().parents[2]


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    reg: Registry[int] = Registry("fetch mode")
    reg.register("a", 1, plugin="p1")
    with pytest.raises(RegistryError, match="registered twice .*p1.*p2"):
        reg.register("a", 2, plugin="p2")
    with pytest.raises(RegistryError, match=r"unknown fetch mode 'b' \(known: a\)"):
        reg.get("b")
    assert reg.get("a") == 1 and "a" in reg and reg.names() == ["a"]


class Misspelled:
    @hookimpl
    def register_fetcher(self, registry):  # type: ignore[no-untyped-def]  # missing "s"
        pass


class WrongArgument:
    @hookimpl
    def register_fetchers(self, registry, extra):  # type: ignore[no-untyped-def]
        pass


def test_misspelled_hook_is_a_startup_error() -> None:
    with pytest.raises(PluginError, match="'oops' implements unknown hook 'register_fetcher'"):
        create_plugin_manager(extra_plugins=[("oops", Misspelled())])


def test_hook_with_unknown_argument_is_a_startup_error() -> None:
    with pytest.raises(PluginError, match="'bad' does not match the hook specifications") as err:
        create_plugin_manager(extra_plugins=[("bad", WrongArgument())])
    assert "extra" in str(err.value)  # the message names the unexpected argument


def test_plugins_are_listed_and_can_be_disabled() -> None:
    pm = create_plugin_manager()
    names = pm.names()
    assert "core" in names and "ce" in names
    info = {p.name: p for p in pm.plugins()}
    assert info["ce"].distribution == "genro-mail-proxy-ce"
    assert "register_routes" in info["ce"].hooks
    assert "ce" not in create_plugin_manager(disabled=["ce"]).names()


def test_config_precedence_and_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("port = 9001\nretry_delays = [1, 2]\n")
    s = load_settings(env={"GMP_PORT": "9002"}, config_file=cfg)
    assert s.port == 9002 and s.retry_delays == [1.0, 2.0]
    with pytest.raises(ConfigError, match="GMP_MAX_RETRIES: invalid value 'many'"):
        load_settings(env={"GMP_MAX_RETRIES": "many"})
    with pytest.raises(ConfigError, match="GMP_SCHEDULER_ACTIVE"):
        load_settings(env={"GMP_SCHEDULER_ACTIVE": "perhaps"})
    cfg.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot: unknown setting"):  # when the plugins are known
        load_settings(env={}, config_file=cfg).bind_sections({})
    assert load_settings(env={}).resolved_database_url().startswith("sqlite:///")


def test_plugin_settings_sections_read_the_same_sources(tmp_path: Path) -> None:
    from mail_proxy.ce.settings import SmtpSettings

    cfg = tmp_path / "config.toml"
    cfg.write_text("smtp_idle_timeout = 12\n")
    s = load_settings(env={"GMP_SMTP_CONNECT_TIMEOUT": "3"}, config_file=cfg)
    s.bind_sections({"smtp": SmtpSettings})
    assert (s.section("smtp").smtp_idle_timeout, s.section("smtp").smtp_connect_timeout) == (12, 3)
    cfg.write_text("[smtp]\nsmtp_idle_timeout = 7\n")  # or in the section's own table
    s = load_settings(env={}, config_file=cfg)
    s.bind_sections({"smtp": SmtpSettings})
    assert s.section("smtp").smtp_idle_timeout == 7
    with pytest.raises(ConfigError, match="GMP_SMTP_IDLE_TIMEOUT: invalid value"):
        load_settings(env={"GMP_SMTP_IDLE_TIMEOUT": "-1"}).bind_sections({"smtp": SmtpSettings})
    cfg.write_text("[nosuch]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"\[nosuch\]: unknown setting"):
        load_settings(env={}, config_file=cfg).bind_sections({"smtp": SmtpSettings})
    with pytest.raises(ConfigError, match="no installed plugin declares"):
        load_settings(env={}).section("smtp")


def test_every_setting_is_in_the_configuration_table() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", doc, re.M))
    sections: Registry[Any] = Registry("settings section")
    pm = create_plugin_manager()
    pm.fill("register_settings", "sections", sections)
    product = {  # the product's plugins (not the test plugins in tests/plugins)
        p.name for p in pm.plugins() if (p.distribution or "").startswith("genro-mail-proxy")
    }
    declared = {f.metadata["env"] for f in setting_fields()}
    for name, section in sections.items():  # every installed product plugin's settings too
        if sections.owner(name) in product:
            declared |= {f.metadata["env"] for f in setting_fields(section.settings)}
    assert declared <= documented, f"undocumented: {sorted(declared - documented)}"
    # the table lists the enterprise plugins' settings too: equal when they are all installed
    enterprise = [
        p.name for p in (ROOT / "packages").glob("ee-*") if (p / "pyproject.toml").exists()
    ]
    installed = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    if all(f"genro-mail-proxy-{name}" in installed for name in enterprise):
        assert declared == documented, (
            f"documented, declared nowhere: {sorted(documented - declared)}"
        )


def test_encryption_round_trip_and_wrong_key(tmp_path: Path) -> None:
    key = generate_key()
    c = Cipher(parse_key(key))
    place = secret_context("accounts", "password_enc", "t1", "a1")
    token = c.encrypt("pässword", place)
    assert "pässword" not in token and c.decrypt(token, place) == "pässword"
    with pytest.raises(EncryptionError, match="does not decrypt"):
        Cipher(parse_key(generate_key())).decrypt(token, place)
    # bound to its place: the same key refuses it anywhere else
    for elsewhere in (
        secret_context("accounts", "password_enc", "t1", "a2"),
        secret_context("accounts", "password_enc", "t2", "a1"),
        secret_context("tenants", "sync_secret_enc", "t1"),
    ):
        with pytest.raises(EncryptionError, match="another row"):
            c.decrypt(token, elsewhere)
    # the legacy format (no associated data) opens only through the upgrade's door
    legacy = "gcm1:" + token[len("gcm2:") :]
    with pytest.raises(EncryptionError, match="legacy format"):
        c.decrypt(legacy, place)
    with pytest.raises(EncryptionError, match="does not decrypt"):
        c.decrypt_legacy(legacy)  # a gcm2 body is not a legacy token either
    with pytest.raises(EncryptionError, match="32 bytes"):
        parse_key("c2hvcnQ=")
    with pytest.raises(EncryptionError, match="not valid base64"):
        load_key("***", None)
    (tmp_path / "encryption.key").write_text(key + "\n")
    assert load_key(None, str(tmp_path)) == (parse_key(key), str(tmp_path / "encryption.key"))


def test_generate_key_one_liner_from_the_faq() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mail_proxy.core.engine.encryption import generate_key; print(generate_key())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert len(parse_key(out)) == 32


def _imports(package_dir: Path) -> dict[Path, set[str]]:
    found: dict[Path, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[path] = names
    return found


def test_core_imports_neither_ce_nor_ee_and_ee_packages_stay_apart() -> None:
    for path, names in _imports(ROOT / "packages" / "core" / "src").items():
        bad = {n for n in names if n.startswith(("mail_proxy.ce", "mail_proxy.ee"))}
        assert not bad, f"{path} imports {bad}"
    for pkg in (ROOT / "packages").glob("ee-*"):
        own = "mail_proxy.ee." + pkg.name.removeprefix("ee-").replace("-", "")
        for path, names in _imports(pkg / "src").items():
            bad = {n for n in names if n.startswith("mail_proxy.ee.") and not n.startswith(own)}
            assert not bad, f"{path} imports another EE package: {bad}"
    for path, names in _imports(ROOT / "packages" / "ce" / "src").items():
        bad = {n for n in names if n.startswith("mail_proxy.ee")}
        assert not bad, f"{path} imports {bad}"


def test_no_distribution_ships_the_namespace_init() -> None:
    for pkg in (ROOT / "packages").iterdir():
        assert not (pkg / "src" / "mail_proxy" / "__init__.py").exists()
        assert not (pkg / "src" / "mail_proxy" / "ee" / "__init__.py").exists()
