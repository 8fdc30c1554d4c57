"""``mail-proxy NAME bounce show|set|test``: the instance's bounce mailbox and return path.

``show`` prints the configuration (never the password) and each mailbox poller's state;
``set`` changes the given fields (``PUT /instance/bounce``, applied at once); ``test`` logs
in and counts the folder's messages, or says in one line what is wrong (exit 1).
"""

from __future__ import annotations

from typing import Any

from cyclopts import App

from mail_proxy.core.cli.errors import CliError, UsageError
from mail_proxy.core.cli.output import fmt_ts, print_fields, print_json, print_table
from mail_proxy.core.cli.prompt import require
from mail_proxy.core.cli.target import current

app = App(name="bounce", help="Bounce mailbox of the instance (bounce plugin).")

FIELDS = [
    "enabled",
    "host",
    "port",
    "user",
    "password_set",
    "folder",
    "use_tls",
    "starttls",
    "poll_interval",
    "return_path",
    "processed_folder",
]
STATUS_COLUMNS = [
    ("mailbox", "MAILBOX"),
    ("state", "STATE"),
    ("last_poll", "LAST POLL"),
    ("last_uid", "LAST UID"),
    ("processed", "READ"),
    ("skipped_too_large", "TOO LARGE"),
    ("last_error", "LAST ERROR"),
]


@app.command
def show(*, json: bool = False) -> int:
    """Show the bounce configuration and the pollers' state.

    Parameters
    ----------
    json
        Print the GET /instance/bounce answer.
    """
    answer = current().client().get("/instance/bounce")
    if json:
        print_json(answer)
        return 0
    print_fields(answer.get("bounce") or {}, FIELDS)
    if answer.get("config_error"):
        print(f"configuration error: {answer['config_error']}")
    rows = [{**m, "last_poll": fmt_ts(m.get("last_poll_ts"))} for m in answer.get("mailboxes", [])]
    print()
    print_table(rows, STATUS_COLUMNS, empty="(no mailbox polled)")
    return 0


@app.command(name="set")
def set_(
    *,
    enable: bool = False,
    disable: bool = False,
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    password: str | None = None,
    ask_password: bool = False,
    folder: str | None = None,
    tls: bool = False,
    starttls: bool = False,
    plain: bool = False,
    poll_interval: float | None = None,
    return_path: str | None = None,
    processed_folder: str | None = None,
    json: bool = False,
) -> int:
    """Change the bounce configuration (only the fields given). Applied at once.

    Parameters
    ----------
    enable
        Start polling (needs host, user and password).
    disable
        Stop polling and VERP.
    host
        IMAP server.
    port
        IMAP port (default 993 with TLS, 143 otherwise).
    user
        IMAP user.
    password
        IMAP password (prefer --ask-password: options show in `ps`).
    ask_password
        Ask for the password on the terminal.
    folder
        Folder to read (default INBOX).
    tls
        Implicit TLS (IMAPS, port 993).
    starttls
        Plain connection upgraded with STARTTLS (required).
    plain
        No TLS at all (loopback and tests only).
    poll_interval
        Seconds between two polls when the server has no IDLE.
    return_path
        Bounce address, e.g. bounces@example.com (envelope senders become VERP addresses).
    processed_folder
        Move processed messages there instead of flagging them seen.
    json
        Print the PUT /instance/bounce answer.
    """
    if enable and disable:
        raise UsageError("--enable and --disable exclude each other")
    if sum((tls, starttls, plain)) > 1:
        raise UsageError("choose one of --tls, --starttls, --plain")
    body: dict[str, Any] = {}
    if enable or disable:
        body["enabled"] = enable
    for key, value in (
        ("host", host),
        ("port", port),
        ("user", user),
        ("folder", folder),
        ("poll_interval", poll_interval),
        ("return_path", return_path),
        ("processed_folder", processed_folder),
    ):
        if value is not None:
            body[key] = value
    if ask_password:
        password = require(None, "--password", "IMAP password", secret=True)
    if password is not None:
        body["password"] = password
    if tls or starttls or plain:
        body["use_tls"], body["starttls"] = tls, starttls
    if not body:
        raise UsageError("nothing to change (see: mail-proxy NAME bounce set --help)")
    answer = current().client().request("PUT", "/instance/bounce", body=body)
    if json:
        print_json(answer)
    else:
        print_fields(answer.get("bounce") or {}, FIELDS)
    return 0


@app.command
def test(*, json: bool = False) -> int:
    """Log in to the bounce mailbox and count the folder's messages (nothing is read or
    changed). Exit 1, with the reason in one line, when it cannot.

    Parameters
    ----------
    json
        Print the POST /instance/bounce/test answer.
    """
    answer = current().client().post("/instance/bounce/test", {})
    if json:
        print_json(answer)
    if not answer.get("reachable"):
        raise CliError(f"bounce mailbox: {answer.get('error') or 'not reachable'}")
    if not json:
        print(f"ok: {answer.get('messages')} message(s) in {answer.get('folder')}")
    return 0
