"""``mail-proxy pec parse FILE...`` (no instance needed) and
``mail-proxy NAME [TENANT] pec status|enable|disable`` (over the instance's REST API).

``parse`` reads saved receipts (``.eml``) with the same parser the service uses and prints
what it reads: a table, or with ``--json`` one JSON object per line (``file``,
``is_receipt``, ``kind``, ``event``, ``reference``, ``recipient``, ``error``, ``provider``,
``ts``, then ``reason`` and ``warnings``).

``enable`` turns an existing account into a PEC account (its mailbox settings), ``disable``
turns it back; both rewrite the account through ``POST /account`` with its other settings
unchanged. ``status`` lists the PEC accounts with their mailbox state (``GET /pec/status``).
"""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter

from mail_proxy.core.cli.errors import CliError
from mail_proxy.core.cli.output import fmt_ts, print_json, print_table
from mail_proxy.core.cli.prompt import require
from mail_proxy.core.cli.target import current

tools = App(name="pec", help="PEC receipts: read saved receipts (no instance needed).")
app = App(name="pec", help="PEC accounts: status of their mailboxes, enable, disable.")

PARSE_COLUMNS = [
    ("file", "FILE"),
    ("kind", "KIND"),
    ("event", "EVENT"),
    ("reference", "REFERENCE"),
    ("recipient", "RECIPIENT"),
    ("error", "ERROR"),
]
STATUS_COLUMNS = [
    ("tenant_id", "TENANT"),
    ("account_id", "ACCOUNT"),
    ("mailbox_name", "MAILBOX"),
    ("last_poll", "LAST POLL"),
    ("last_uid", "LAST UID"),
    ("error", "ERROR"),
    ("waiting", "WAITING accept/deliver"),
]
#: the account settings POST /account takes, copied from GET /accounts when rewriting one
ACCOUNT_FIELDS = (
    "id",
    "transport",
    "host",
    "port",
    "user",
    "use_tls",
    "starttls",
    "timeout",
    "batch_size",
    "limit_per_minute",
    "limit_per_hour",
    "limit_per_day",
    "limit_behavior",
    "default",
    "options",
)
PEC_FIELDS = ("pec", "imap_host", "imap_port", "imap_user", "imap_folder", "imap_use_tls")


@tools.command(name="parse")
def parse(*files: Path, json: bool = False) -> int:
    """Read saved PEC receipts and print what they say.

    Parameters
    ----------
    files
        Receipt files (raw RFC 5322 messages, e.g. saved .eml).
    json
        One JSON object per line instead of a table.
    """
    from .parsing import parse_files

    if not files:
        raise CliError("give at least one FILE")
    rows: list[dict[str, Any]] = []
    failed = 0
    for path in files:
        try:
            row = next(parse_files([path]))
        except OSError as exc:
            failed += 1
            print(f"mail-proxy: {path}: {exc.strerror or exc}", file=sys.stderr)
            continue
        if json:
            print(jsonlib.dumps(row, ensure_ascii=False), flush=True)
        else:
            if not row["is_receipt"]:
                row["kind"] = row["kind"] or "(not a receipt)"
                row["error"] = row["reason"]
            rows.append(row)
    if not json:
        print_table(rows, PARSE_COLUMNS, empty="(nothing read)")
    return 1 if failed else 0


@app.command
def status(*, json: bool = False) -> int:
    """List the PEC accounts with their mailbox state: last read, last UID, errors, and the
    messages waiting for their acceptance or full delivery.

    Parameters
    ----------
    json
        Print the GET /pec/status answer.
    """
    target = current()
    answer = target.client().get("/pec/status", target.tenant_query())
    if json:
        print_json(answer)
        return 0
    rows = []
    for acc in answer.get("accounts", []):
        mailbox = acc.get("mailbox") or {}
        poller = acc.get("poller") or {}
        waiting = acc.get("waiting") or {}
        rows.append(
            {
                **acc,
                "mailbox_name": f"{acc.get('imap_user')}@{acc.get('imap_host')}/"
                f"{acc.get('imap_folder')}",
                "last_poll": fmt_ts(poller.get("last_poll_ts") or mailbox.get("updated_at")),
                "last_uid": mailbox.get("last_uid"),
                "error": poller.get("last_error"),
                "waiting": f"{waiting.get('acceptance', 0)}/{waiting.get('delivery', 0)}",
            }
        )
    print_table(rows, STATUS_COLUMNS, empty="(no PEC accounts: pec enable ACCOUNT_ID ...)")
    return 0


@app.command
def enable(
    account_id: str,
    /,
    *,
    imap_host: str | None = None,
    imap_port: int | None = None,
    imap_user: str | None = None,
    imap_password: str | None = None,
    imap_folder: str | None = None,
    imap_use_tls: Annotated[bool | None, Parameter(negative="--no-imap-use-tls")] = None,
    json: bool = False,
) -> int:
    """Make an existing account a PEC account: its mailbox, where the provider's receipts
    arrive. Values not given keep what the account has; the IMAP host and user are asked
    for on a terminal when it has none, the password without echo.

    Parameters
    ----------
    account_id
        The account (add it first with: accounts add).
    imap_host
        IMAP server of the PEC mailbox (e.g. imaps.pec.aruba.it).
    imap_port
        IMAP port (default 993; 143 with --no-imap-use-tls).
    imap_user
        IMAP user (usually the PEC address).
    imap_password
        IMAP password (stored encrypted). Prefer the prompt: options show in `ps`.
    imap_folder
        Folder the receipts arrive in (default INBOX).
    imap_use_tls
        Implicit TLS (IMAPS, the default).
    json
        Print the POST /account answer.
    """
    target = current()
    client = target.client()
    account = _account(client, target.tenant_query(), account_id)
    body = _rewrite(account, target.tenant)
    body["pec"] = True
    host = imap_host or account.get("imap_host")
    user = imap_user or account.get("imap_user")
    body["imap_host"] = require(host, "--imap-host", "IMAP host")
    body["imap_user"] = require(user, "--imap-user", "IMAP user")
    if imap_password is None and not account.get("imap_password_set"):
        imap_password = require(None, "--imap-password", "IMAP password", secret=True)
    if imap_password is not None:
        body["imap_password"] = imap_password
    for name, value in (
        ("imap_port", imap_port),
        ("imap_folder", imap_folder),
        ("imap_use_tls", imap_use_tls),
    ):
        if value is not None:
            body[name] = value
    return _save(client, body, json, f"account {account_id!r} is a PEC account")


@app.command
def disable(account_id: str, /, *, json: bool = False) -> int:
    """Make a PEC account an ordinary account again (its mailbox is no longer read).

    Parameters
    ----------
    account_id
        The account.
    json
        Print the POST /account answer.
    """
    target = current()
    client = target.client()
    account = _account(client, target.tenant_query(), account_id)
    body = _rewrite(account, target.tenant)
    body["pec"] = False
    return _save(client, body, json, f"account {account_id!r} is no longer a PEC account")


def _account(client: Any, query: dict[str, str], account_id: str) -> dict[str, Any]:
    for account in client.get("/accounts", query).get("accounts", []):
        if account.get("id") == account_id:
            return dict(account)
    raise CliError(f"no account {account_id!r} (add it first with: accounts add)")


def _rewrite(account: dict[str, Any], tenant: str | None) -> dict[str, Any]:
    """The account as POST /account takes it (the stored passwords are kept: not sent)."""
    body = {k: account[k] for k in ACCOUNT_FIELDS if account.get(k) is not None}
    body.update({k: account[k] for k in PEC_FIELDS if account.get(k) is not None})
    if tenant:
        body["tenant_id"] = tenant
    return body


def _save(client: Any, body: dict[str, Any], json: bool, done: str) -> int:
    answer = client.post("/account", body)
    if json:
        print_json(answer)
    else:
        print(done)
    return 0
