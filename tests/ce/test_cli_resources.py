"""Resource commands (accounts, messages, send, run-now, suspend/activate) through the real
``mail-proxy`` script against one real running instance (started once per module).

The instance delivers through a ``file`` transport account, so a sent message is a real
``.eml`` file on disk. Every ``--json`` output is compared with the same REST call made
directly, since the CLI must print the server's answer, not its own idea of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.core.testing.net import free_port
from support.cli_runner import MAIL_PROXY, Cli, http, run_in_pty

OUTBOX = "outbox"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    cli = Cli(tmp_path_factory.mktemp("home"))
    cli.ok("start", "main", "--port", str(free_port()))
    outbox = cli.home / OUTBOX
    cli.ok(
        "main",
        "accounts",
        "add",
        "files",
        "--transport",
        "file",
        "--option",
        f"directory={outbox}",
        "--default",
    )
    yield cli
    cli.cleanup()


def rest(cli: Cli, method: str, path: str, body: Any = None) -> Any:
    status, data = http(method, cli.url("main") + path, cli.token("main"), body)
    assert status == 200, data
    return data


def eml(path: Path, msg_id: str | None, *, attach: bool = False, html_only: bool = False) -> Path:
    m = EmailMessage()
    m["From"] = "Désiré Sender <sender@example.com>"
    m["To"] = "a@example.com, Bee <b@example.com>"
    m["Cc"] = "c@example.com"
    m["Subject"] = f"Subject of {path.stem} è"
    m["X-Campaign"] = "spring"
    if msg_id:
        m["Message-ID"] = f"<{msg_id}>"
    if html_only:
        m.set_content("<p>only html</p>", subtype="html")
    else:
        m.set_content("plain text body")
        m.add_alternative("<p>html body</p>", subtype="html")
    if attach:
        m.add_attachment(
            b"%PDF-1.4 test", maintype="application", subtype="pdf", filename="report.pdf"
        )
    path.write_bytes(bytes(m))
    return path


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


# -- accounts --------------------------------------------------------------------------------
def test_accounts_add_with_every_option_never_prompts(srv: Cli) -> None:
    result = srv.ok(
        "main",
        "accounts",
        "add",
        "smtp1",
        "--host",
        "smtp.example.com",
        "--port",
        "2525",
        "--user",
        "mailer",
        "--password",
        "pw-secret",
        "--starttls",
        "--timeout",
        "12",
        "--limit-per-minute",
        "30",
        "--limit-behavior",
        "reject",
        "--json",
    )  # stdin is not a terminal: a prompt would fail the command with exit 2
    account = result.json()["account"]
    assert account["id"] == "smtp1" and account["port"] == 2525 and account["user"] == "mailer"
    assert account["has_password"] is True and account["starttls"] is True
    assert account["limit_per_minute"] == 30 and account["limit_behavior"] == "reject"
    assert "pw-secret" not in result.out
    listed = srv.ok("main", "accounts", "list", "--json").json()
    assert listed == rest(srv, "GET", "/accounts")
    table = srv.ok("main", "accounts", "list").out
    assert "smtp1" in table and "smtp.example.com" in table and "30/-/-" in table


def test_missing_values_without_a_terminal_are_usage_errors(srv: Cli) -> None:
    result = srv("main", "accounts", "add")
    assert result.code == 2 and "missing ACCOUNT_ID (no terminal to ask on)" in result.err
    result = srv("main", "accounts", "add", "x1")
    assert result.code == 2 and "missing --host" in result.err
    assert all(a["id"] != "x1" for a in rest(srv, "GET", "/accounts")["accounts"])


def test_accounts_add_asks_for_missing_values_on_a_terminal(srv: Cli) -> None:
    code, output = run_in_pty(
        [MAIL_PROXY, "main", "accounts", "add"],
        srv.env,
        [
            ("Account id:", "tty1"),
            ("SMTP host:", "smtp.tty.example"),
            ("SMTP port [587]:", ""),
            ("SMTP user (Enter for none):", "alice"),
            ("SMTP password (Enter for none):", "s3cret"),
        ],
    )
    assert code == 0, output
    assert "account 'tty1' saved" in output
    assert "s3cret" not in output  # typed without echo
    accounts = {a["id"]: a for a in rest(srv, "GET", "/accounts")["accounts"]}
    assert accounts["tty1"]["host"] == "smtp.tty.example" and accounts["tty1"]["port"] == 587
    assert accounts["tty1"]["user"] == "alice" and accounts["tty1"]["has_password"] is True


def test_server_validation_errors_exit_1(srv: Cli) -> None:
    result = srv("main", "accounts", "add", "bad", "--host", "not a host!")
    assert result.code == 1
    assert "invalid_host" in result.err and "HTTP 400" in result.err
    assert result.err.count("\n") == 1


def test_accounts_delete(srv: Cli) -> None:
    srv.ok("main", "accounts", "add", "gone", "--host", "smtp.example.net")
    assert "deleted" in srv.ok("main", "accounts", "delete", "gone").out
    assert all(a["id"] != "gone" for a in rest(srv, "GET", "/accounts")["accounts"])
    result = srv("main", "accounts", "delete", "gone")
    assert result.code == 1 and "HTTP 404" in result.err


# -- send and messages ---------------------------------------------------------------------
def test_send_eml_files_and_read_them_back(srv: Cli, tmp_path: Path) -> None:
    eml(tmp_path / "1.eml", "first@example.com", attach=True)
    eml(tmp_path / "2.eml", None, html_only=True)
    (tmp_path / "3.eml").write_bytes(b"Subject: no sender\n\nbody\n")
    (tmp_path / "notes.txt").write_text("not an eml")

    result = srv("main", "send", str(tmp_path), "--batch", "spring", "--priority", "high", "--json")
    assert result.code == 1, result  # one file could not be queued
    answer = result.json()
    assert answer["queued"] == 2 and answer["ok"] is False
    assert answer["rejected"] == [
        {"id": None, "file": str(tmp_path / "3.eml"), "reason": "no From header"}
    ]
    assert "1 message(s) not queued" in result.err

    srv.ok("main", "run-now")
    outbox = srv.home / OUTBOX
    wait_for(lambda: len(list(outbox.glob("*.eml"))) >= 2)

    delivered = message_from_bytes(
        (outbox / "first_example.com.eml").read_bytes(), policy=policy.default
    )
    assert str(delivered["Subject"]) == "Subject of 1 è"
    assert str(delivered["To"]) == "a@example.com, Bee <b@example.com>"
    assert str(delivered["X-Campaign"]) == "spring"
    assert delivered["Message-ID"] == "<first@example.com>"
    [attachment] = list(delivered.iter_attachments())
    assert attachment.get_filename() == "report.pdf"
    assert attachment.get_content() == b"%PDF-1.4 test"
    assert delivered.get_body(("html",)).get_content().strip() == "<p>html body</p>"

    wait_for(
        lambda: all(
            m["status"] == "sent"
            for m in rest(srv, "GET", "/messages?batch_code=spring")["messages"]
        )
    )
    listed = srv.ok("main", "messages", "list", "--batch", "spring", "--json").json()
    assert listed == rest(srv, "GET", "/messages?batch_code=spring")
    assert {m["priority"] for m in listed["messages"]} == {1}
    shown = srv.ok("main", "messages", "show", "first@example.com", "--json").json()
    assert shown == rest(srv, "GET", "/messages/first@example.com")
    assert shown["message"]["attachments"] == ["report.pdf"]
    text = srv.ok("main", "default", "messages", "show", "first@example.com").out
    assert "sent" in text and "report.pdf" in text and "queued" in text  # with its events
    table = srv.ok("main", "messages", "list", "--status", "sent").out
    assert "first@example.com" in table


def test_suspend_keeps_messages_that_can_then_be_deleted(srv: Cli, tmp_path: Path) -> None:
    suspended = srv.ok("main", "suspend", "--json").json()
    assert suspended == {"ok": True, "scheduler_active": False}
    try:
        eml(tmp_path / "held.eml", "held@example.com")
        assert "queued 1 message(s)" in srv.ok("main", "send", str(tmp_path / "held.eml")).out
        srv.ok("main", "run-now")
        [held] = rest(srv, "GET", "/messages?status=pending")["messages"]
        assert held["id"] == "held@example.com"
        assert "removed 1" in srv.ok("main", "messages", "delete", "held@example.com").out
        result = srv("main", "messages", "delete", "held@example.com")
        assert result.code == 1 and "held@example.com" in result.err
    finally:
        assert srv.ok("main", "activate", "--json").json() == {"ok": True, "scheduler_active": True}


def test_suspend_and_activate_one_batch_of_a_tenant(srv: Cli) -> None:
    answer = srv.ok("main", "default", "suspend", "--batch", "b7", "--json").json()
    assert answer["ok"] and answer["tenant_id"] == "default"
    assert "b7" in answer["suspended_batches"]
    answer = srv.ok("main", "activate", "--batch", "b7", "--json").json()
    assert "b7" not in answer["suspended_batches"]
    text = srv.ok("main", "default", "suspend").out  # the whole tenant, readable
    assert "suspended_batches" in text
    srv.ok("main", "default", "activate")


def test_progress_bar_on_a_terminal(srv: Cli, tmp_path: Path) -> None:
    for i in range(3):
        eml(tmp_path / f"p{i}.eml", f"progress{i}@example.com")
    code, output = run_in_pty([MAIL_PROXY, "main", "send", str(tmp_path)], srv.env, [])
    assert code == 0, output
    assert "sending [" in output and "3/3" in output and "queued 3 message(s)" in output


# -- grammar: explicit tenant, `use` context ------------------------------------------------
def test_explicit_default_tenant_and_the_use_context(srv: Cli) -> None:
    implicit = srv.ok("main", "accounts", "list", "--json").json()
    assert srv.ok("main", "default", "accounts", "list", "--json").json() == implicit
    assert "no default" in srv.ok("use").out
    srv.ok("use", "main/default")
    try:
        assert srv.ok("use").out.strip() == "main/default"
        assert srv.ok("accounts", "list", "--json").json() == implicit
        assert srv.ok("info", "--json").json()["name"] == "main"
        result = srv("nosuch", "accounts", "list")  # an explicit name wins over the context
        assert result.code == 1 and "no instance 'nosuch'" in result.err
    finally:
        srv.ok("use", "--clear")
    assert srv("accounts", "list").code == 2
