"""The ``mail-proxy`` grammar, help, exit codes and plugin commands — no server needed.

Every test runs the installed console script in a subprocess with its own GMP_HOME. The
third-party test plugin (tests/plugins/gmp_test_plugin, installed editable) contributes the
global command ``hello``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli_runner import HEAVY_MODULES, Cli, clean_env


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home")


def _one_line_error(result: object) -> str:
    err = result.err  # type: ignore[attr-defined]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mail-proxy: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_help_lists_all_levels_and_plugin_commands(cli: Cli) -> None:
    result = cli.ok("--help")
    out = result.out
    for name in (
        "start",
        "stop",
        "restart",
        "list",
        "plugins",
        "keygen",
        "serve",
        "use",
        "info",
        "token",
        "logs",
        "accounts",
        "messages",
        "send",
        "run-now",
        "suspend",
        "activate",
        "hello",
    ):
        assert f" {name} " in out, name
    assert "Instance commands: mail-proxy NAME COMMAND" in out
    assert "Tenant commands: mail-proxy NAME [TENANT] COMMAND" in out
    assert cli.ok().out == out  # no arguments: the same help


def test_help_imports_no_database_smtp_imap_or_server_code(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from mail_proxy.core.cli.main import main\n"
        "code = main(['--help'])\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.splitlines()[-1])
    assert data["code"] == 0
    modules = set(data["modules"])
    for heavy in (*HEAVY_MODULES, "aiohttp", "pydantic"):
        assert heavy not in modules, heavy
    # commands are imported only when they run
    assert "mail_proxy.ce.cli.instances" not in modules
    assert "gmp_test_plugin.cli" not in modules
    assert "gmp_test_plugin" in modules  # the plugin itself was loaded (entry point)

    # the core CLI itself never imports the Community Edition: only the `ce` plugin does
    env = clean_env(tmp_path, GMP_DISABLED_PLUGINS="ce,multitenancy")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout.splitlines()[-1])["modules"])
    assert not [m for m in modules if m.startswith("mail_proxy.ce")]


def test_instance_and_tenant_help(cli: Cli) -> None:
    out = cli.ok("srv", "--help").out
    assert "Usage: mail-proxy srv [TENANT] COMMAND" in out
    assert " info " in out and " accounts " in out and " start " not in out
    out = cli.ok("srv", "acme", "--help").out
    assert "Usage: mail-proxy srv acme COMMAND" in out
    assert " accounts " in out and " info " not in out
    out = cli.ok("srv", "accounts", "--help").out
    assert "Usage: mail-proxy srv accounts" in out and " add " in out
    out = cli.ok("srv", "acme", "accounts", "add", "--help").out
    assert "--host" in out and "--password" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["start"], "requires an argument"),
        (["list", "--bogus"], "--bogus"),
        (["srv", "acme"], "unknown command 'acme'"),
        (["srv", "acme", "bogus"], "unknown command 'bogus'"),
        (["srv", "acme", "info"], "'info' is an instance command"),
        (["bad/name", "info"], "invalid instance name"),
        (["srv", "bad/tenant", "accounts", "list"], "invalid tenant name"),
        (["accounts", "list"], "'accounts' is a tenant command"),
        (["srv", "accounts", "lst"], 'Unknown command "lst"'),
        (["srv", "messages", "delete"], "at least one MESSAGE_ID"),
        (["srv", "send"], "at least one .eml"),
        (["start", "list"], "cannot name an instance"),
    ],
)
def test_usage_errors_exit_2_with_one_line(cli: Cli, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.code == 2, result
    assert expected in _one_line_error(result)


@pytest.mark.parametrize(
    "args",
    [
        ["nosuch", "info"],
        ["nosuch", "accounts", "list"],
        ["nosuch", "acme", "messages", "list"],
        ["stop", "nosuch"],
        ["restart", "nosuch"],
        ["nosuch", "token"],
        ["use", "nosuch"],
    ],
)
def test_unknown_instance_exit_1(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == 1, result
    assert "no instance 'nosuch'" in _one_line_error(result)


def test_list_without_instances(cli: Cli) -> None:
    assert cli.ok("list", "--json").json() == {"instances": []}
    assert "no instances" in cli.ok("list").out


def test_keygen_prints_a_fresh_32_byte_key(cli: Cli) -> None:
    keys = {cli.ok("keygen").out.strip() for _ in range(2)}
    assert len(keys) == 2
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 32


def test_version(cli: Cli) -> None:
    assert cli.ok("--version").out.strip() == "0.1.0"


def test_plugin_command_runs(cli: Cli) -> None:
    assert cli.ok("hello").out.strip() == "hello world from gmp_test_plugin"
    assert cli.ok("hello", "bob", "--shout").out.strip() == "HELLO BOB FROM GMP_TEST_PLUGIN"
    assert "Who to greet" in cli.ok("hello", "--help").out


def test_disabled_plugin_contributes_no_command(tmp_path: Path) -> None:
    cli = Cli(tmp_path, GMP_DISABLED_PLUGINS="gmp_test")
    assert " hello " not in cli.ok("--help").out
    result = cli("hello")
    assert result.code == 2, result
    assert "'hello' is neither a command nor an instance" in _one_line_error(result)


def test_plugins_lists_installed_plugins_and_what_they_add(cli: Cli) -> None:
    plugins = {p["name"]: p for p in cli.ok("plugins", "--json").json()["plugins"]}
    test = plugins["gmp_test"]
    assert test["distribution"] == "gmp-test-plugin"
    assert test["version"] == "0.0.1"
    assert test["edition"] == "test"
    assert {"register_routes", "register_commands", "plugin_info"} <= set(test["hooks"])
    assert test["adds"] == {"commands": ["hello"], "routes": ["GET /hello-plugin"]}
    ce = plugins["ce"]
    assert ce["distribution"] == "genro-mail-proxy-ce" and ce["edition"] == "ce"
    assert "start" in ce["adds"]["commands"]
    assert "tenant:accounts" in ce["adds"]["commands"]
    assert {"base64", "filesystem", "endpoint", "http_url"} <= set(ce["adds"]["fetch_modes"])
    assert {"smtp", "file"} <= set(ce["adds"]["transports"])
    assert "sqlite" in ce["adds"]["storage_backends"]
    assert plugins["core"]["edition"] == "core"
    table = cli.ok("plugins").out
    assert "gmp_test" in table and "gmp-test-plugin" in table and "GET /hello-plugin" in table
