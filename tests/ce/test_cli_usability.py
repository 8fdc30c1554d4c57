"""The ``mail-proxy`` command as people meet it: pipes closed early, the default account,
prompts with one hint, ``--json`` on every list, progress on a terminal only, and core alone.

The real console script runs in subprocesses (a pseudo-terminal where a person would type)
against one real running instance per module.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.core.testing.net import free_port
from support.cli_runner import MAIL_PROXY, Cli, http, run_in_pty


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    cli = Cli(tmp_path_factory.mktemp("home"))
    cli.ok("start", "main", "--port", str(free_port()))
    yield cli
    cli.cleanup()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Cli]:
    """An instance of its own: its default tenant has no account yet."""
    cli = Cli(tmp_path / "home")
    cli.ok("start", "solo", "--port", str(free_port()))
    yield cli
    cli.cleanup()


def rest(cli: Cli, name: str, method: str, path: str, body: Any = None) -> Any:
    status, data = http(method, cli.url(name) + path, cli.token(name), body)
    assert status == 200, data
    return data


def accounts(cli: Cli, name: str) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in rest(cli, name, "GET", "/accounts")["accounts"]}


def file_account(cli: Cli, name: str, account_id: str, *extra: str) -> list[str]:
    return [
        name,
        "accounts",
        "add",
        account_id,
        "--transport",
        "file",
        "--option",
        f"directory={cli.home / 'out'}",
        *extra,
    ]


def piped(cli: Cli, args: list[str], reader: str = "head -1") -> tuple[int, str, str]:
    """Run ``mail-proxy ARGS | READER`` in bash; return (mail-proxy's exit, stdout, stderr)."""
    quoted = " ".join(f"'{a}'" for a in [MAIL_PROXY, *args])
    proc = subprocess.run(
        ["bash", "-c", f'{quoted} | {reader}; exit "${{PIPESTATUS[0]}}"'],
        capture_output=True,
        text=True,
        env=cli.env,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


# -- stdout closed early --------------------------------------------------------------------
def test_a_reader_that_stops_early_is_not_an_error(srv: Cli) -> None:
    srv.ok(*file_account(srv, "main", "pipes", "--default"))
    messages = [
        {
            "id": f"pipe-{i}",
            "from": "a@example.com",
            "to": ["b@example.org"],
            "subject": f"pipe {i}",
            "body": "x" * 200,
        }
        for i in range(300)
    ]
    rest(srv, "main", "POST", "/commands/add-messages", {"messages": messages})
    for args, reader in [
        (["main", "messages", "show", "pipe-1"], "head -2"),
        (["main", "messages", "list", "--limit", "300"], "head -1"),
        (["main", "messages", "list", "--limit", "300", "--json"], "head -c 10"),
        (["main", "command-log", "export"], "head -0"),
        (["--help"], "head -1"),
        (["main", "accounts", "--help"], "head -1"),
        (["plugins"], "true"),
    ]:
        code, _out, err = piped(srv, args, reader)
        shown = " ".join(args) + " | " + reader
        assert code == 0, f"{shown}: exit {code}\n{err}"
        assert err == "", f"{shown}: {err}"


# -- the default account ----------------------------------------------------------------------
def test_the_first_account_of_a_tenant_becomes_its_default(fresh: Cli) -> None:
    fresh.ok(*file_account(fresh, "solo", "first"))  # no terminal, no --default
    assert accounts(fresh, "solo")["first"]["default"] is True
    second = fresh.ok(*file_account(fresh, "solo", "second"))
    assert accounts(fresh, "solo")["second"]["default"] is False
    assert second.err == ""  # the tenant has a default: nothing to say
    # a message that names no account goes through the default
    answer = rest(
        fresh,
        "solo",
        "POST",
        "/commands/add-messages",
        {"messages": [{"id": "m", "from": "a@x.com", "to": ["b@y.org"], "subject": "s"}]},
    )
    assert answer["queued"] == 1, answer


def test_no_default_is_kept_when_asked_and_then_pointed_out(fresh: Cli) -> None:
    fresh.ok(*file_account(fresh, "solo", "first", "--no-default"))
    assert accounts(fresh, "solo")["first"]["default"] is False
    result = fresh.ok(*file_account(fresh, "solo", "second"))
    assert accounts(fresh, "solo")["second"]["default"] is False
    assert "the tenant has no default account" in result.err
    assert "accounts add second --default" in result.err


def test_on_a_terminal_the_question_is_asked_when_the_tenant_has_no_default(fresh: Cli) -> None:
    question = "Make 'tty1' the tenant's default account (used by messages that name none)? [Y/n]:"
    code, output = run_in_pty(
        [MAIL_PROXY, *file_account(fresh, "solo", "tty1")], fresh.env, [(question, "")]
    )
    assert code == 0, output
    assert accounts(fresh, "solo")["tty1"]["default"] is True
    code, output = run_in_pty(
        [MAIL_PROXY, *file_account(fresh, "solo", "tty2")], fresh.env, []
    )  # the tenant has a default now: no question
    assert code == 0 and "default account" not in output, output
    fresh.ok(*file_account(fresh, "solo", "tty1", "--no-default"))
    question = question.replace("tty1", "tty3")
    code, output = run_in_pty(
        [MAIL_PROXY, *file_account(fresh, "solo", "tty3")], fresh.env, [(question, "n")]
    )
    assert code == 0, output
    assert not any(a["default"] for a in accounts(fresh, "solo").values())


# -- prompts: one hint each -------------------------------------------------------------------
HINTS = re.compile(r"\((?:Enter for [^)]*)\)|\[[^\]]*\]")


def test_every_prompt_of_accounts_add_shows_one_hint_at_most(fresh: Cli) -> None:
    code, output = run_in_pty(
        [MAIL_PROXY, "solo", "accounts", "add"],
        fresh.env,
        [
            ("Account id:", "smtp1"),
            ("SMTP host:", "smtp.example.com"),
            ("SMTP port [587]:", ""),
            ("SMTP user (Enter for none):", "me"),
            ("SMTP password (Enter for none):", "pw"),
            ("(used by messages that name none)? [Y/n]:", "y"),
        ],
    )
    assert code == 0, output
    prompts = [ln for ln in output.splitlines() if ln.rstrip().endswith(":")]
    assert len(prompts) >= 6, output
    for line in prompts:
        assert len(HINTS.findall(line)) <= 1, line


def test_tenant_prompts_show_one_hint_each_when_multitenancy_is_installed(srv: Cli) -> None:
    from mail_proxy.core.cli.main import load_commands

    if "tenants" not in {s.name for s in load_commands().at("instance")}:
        pytest.skip("the multitenancy plugin is not installed")
    code, output = run_in_pty(
        [MAIL_PROXY, "main", "tenants", "add"],
        srv.env,
        [
            ("Tenant id:", "hinted"),
            ("Name", ""),
            ("Base URL", "https://hinted.example.com"),
            ("Delivery-report path", ""),
            ("Auth to the tenant", "none"),
        ],
    )
    assert code == 0, output
    prompts = [ln for ln in output.splitlines() if ln.rstrip().endswith(":")]
    assert any("Delivery-report path" in ln for ln in prompts), output
    for line in prompts:
        assert len(HINTS.findall(line)) <= 1, line


def test_prompt_text_keeps_a_label_that_brings_its_own_hint() -> None:
    from mail_proxy.core.cli.prompt import prompt_text

    assert prompt_text("SMTP user", hint="Enter for none") == "SMTP user (Enter for none)"
    assert prompt_text("SMTP port", default="587", hint="Enter for none") == "SMTP port [587]"
    label = "Delivery-report path (Enter for /mail-proxy/sync)"
    assert prompt_text(label, hint="Enter for none") == label
    assert prompt_text("Delete it? [y/N]", default="n") == "Delete it? [y/N]"


# -- --json on every list ---------------------------------------------------------------------
def test_every_list_command_of_every_plugin_has_json() -> None:
    from cyclopts import App

    from mail_proxy.core.cli.main import load_commands

    lists: list[tuple[str, Any]] = []
    for spec in load_commands().all():
        module, _, attr = spec.target.partition(":")
        target = getattr(__import__(module, fromlist=[attr]), attr)
        if isinstance(target, App):
            for name in target:
                if name == "list" or name.endswith("-list") or name.startswith("list-"):
                    lists.append((f"{spec.name} {name}", target[name].default_command))
        elif spec.name == "list" or spec.name in ("plugins",):
            lists.append((spec.name, target))
    assert {"list", "accounts list", "messages list", "command-log list", "plugins"} <= {
        name for name, _ in lists
    }
    missing = [name for name, fn in lists if "json" not in inspect.signature(fn).parameters]
    assert not missing, f"list commands without --json: {missing}"


def test_list_commands_json_is_the_server_answer(srv: Cli) -> None:
    for args, path in [
        (["main", "accounts", "list", "--json"], "/accounts"),
        (["main", "command-log", "list", "--json", "--limit", "5"], "/command-log?limit=5"),
    ]:
        assert srv.ok(*args).json() == rest(srv, "main", "GET", path)
    listed = srv.ok("list", "--json").json()
    assert [i["name"] for i in listed["instances"]] == ["main"]


# -- progress: on a terminal, never on a pipe -------------------------------------------------
def test_export_purge_and_rotate_key_show_progress_on_a_terminal_only(
    srv: Cli, tmp_path: Path
) -> None:
    for i in range(3):  # audited changes to export
        srv.ok(*file_account(srv, "main", f"audited-{i}"))
    out = tmp_path / "audit.ndjson"
    code, output = run_in_pty(
        [MAIL_PROXY, "main", "command-log", "export", "--output", str(out)], srv.env, []
    )
    assert code == 0, output
    lines = out.read_text().splitlines()
    assert lines and all(json.loads(line)["pk"] for line in lines)
    assert f"exporting {len(lines)} entries" in output
    assert f"exported {len(lines)} entries to {out}" in output

    piped_out = tmp_path / "again.ndjson"
    result = srv.ok("main", "command-log", "export", "--output", str(piped_out))
    assert "exporting" not in result.err and "\r" not in result.err
    assert piped_out.read_text().splitlines()[: len(lines)] == lines
    streamed = srv.ok("main", "command-log", "export")
    assert streamed.out.splitlines()[: len(lines)] == lines and streamed.err == ""

    code, output = run_in_pty([MAIL_PROXY, "main", "messages", "purge", "--yes"], srv.env, [])
    assert code == 0, output
    assert "purging: done in" in output and "removed 0" in output
    result = srv.ok("main", "messages", "purge", "--older-than", "0", "--json")
    assert result.json()["ok"] is True and result.err == ""

    code, output = run_in_pty([MAIL_PROXY, "main", "rotate-key"], srv.env, [])
    assert code == 0, output
    assert "re-encrypting: done in" in output
    result = srv.ok("main", "rotate-key")
    assert "re-encrypting: done" not in result.err and "\r" not in result.err


# -- core alone --------------------------------------------------------------------------------
def test_without_any_plugin_commands_mail_proxy_names_the_package_to_add(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    plugins = cli.ok("plugins", "--json").json()["plugins"]
    others = ",".join(p["name"] for p in plugins if p["name"] != "core")
    bare = Cli(tmp_path / "home", GMP_DISABLED_PLUGINS=others)
    for args, code in [((), 1), (("serve",), 1), (("start", "x"), 1), (("--help",), 0)]:
        result = bare(*args)
        assert result.code == code, result
        text = (result.out + result.err).strip()
        assert len(text.splitlines()) == 1, text
        assert "pip install genro-mail-proxy" in text and "genro-mail-proxy-ce" in text
    assert bare("--version").out.strip()
    assert not (tmp_path / "home" / "x").exists()


def test_url_prints_the_instance_url_for_scripts(srv: Cli) -> None:
    assert srv.ok("main", "url").out.strip() == srv.url("main")
