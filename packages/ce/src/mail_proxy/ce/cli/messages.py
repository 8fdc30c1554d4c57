"""``mail-proxy NAME [TENANT] messages list|show|delete`` over ``/messages`` and
``/commands/delete-messages``."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

from cyclopts import App

from mail_proxy.core.cli.errors import CliError, UsageError
from mail_proxy.core.cli.output import Activity, fmt_ts, print_fields, print_json, print_table
from mail_proxy.core.cli.prompt import confirm
from mail_proxy.core.cli.target import current

app = App(name="messages", help="Messages of a tenant: queued, sent, failed.")

COLUMNS = [
    ("id", "ID"),
    ("status", "STATUS"),
    ("priority", "PRI"),
    ("account_id", "ACCOUNT"),
    ("attempts", "TRIES"),
    ("created", "CREATED"),
    ("error", "ERROR"),
]
SHOW_KEYS = [
    "id",
    "tenant_id",
    "status",
    "priority",
    "account_id",
    "batch_code",
    "from",
    "to",
    "subject",
    "attachments",
    "attempts",
    "created_at",
    "deferred_ts",
    "sent_ts",
    "error_ts",
    "error",
]


@app.command(name="list")
def list_messages(
    *,
    status: str | None = None,
    batch: str | None = None,
    active: bool = False,
    limit: int | None = None,
    cursor: str | None = None,
    json: bool = False,
) -> int:
    """List messages in the order the server returns them (paginated: --limit, --cursor).

    Parameters
    ----------
    status
        Only this status: pending, scheduled, deferred, sending, sent, error.
    batch
        Only this batch_code.
    active
        Only messages not yet sent or failed.
    limit
        Page size.
    cursor
        Continue after a previous page (its next_cursor).
    json
        Print the GET /messages answer.
    """
    target = current()
    query: dict[str, Any] = {
        **target.tenant_query(),
        "status": status,
        "batch_code": batch,
        "limit": limit,
        "cursor": cursor,
    }
    if active:
        query["active_only"] = True
    answer = target.client().get("/messages", query)
    if json:
        print_json(answer)
        return 0
    rows = [{**m, "created": fmt_ts(m.get("created_at"))} for m in answer.get("messages", [])]
    print_table(rows, COLUMNS, empty="(no messages)")
    if answer.get("next_cursor"):
        print(f"more: --cursor {answer['next_cursor']}", file=sys.stderr)
    return 0


@app.command
def show(message_id: str, /, *, json: bool = False) -> int:
    """Show one message and its events.

    Parameters
    ----------
    message_id
        The client's message id.
    json
        Print the GET /messages/{id} answer.
    """
    target = current()
    client = target.client()
    path = f"/messages/{quote(message_id, safe='')}"
    answer = client.get(path, target.tenant_query())
    if json:
        print_json(answer)
        return 0
    message = dict(answer.get("message") or {})
    for key in ("created_at", "deferred_ts", "sent_ts", "error_ts"):
        message[key] = fmt_ts(message.get(key))
    print_fields(message, [k for k in SHOW_KEYS if k in message])
    events = client.get(path + "/events", target.tenant_query()).get("events", [])
    if events:
        print()
        rows = [{**e, "when": fmt_ts(e.get("event_ts"))} for e in events]
        print_table(
            rows, [("when", "WHEN"), ("event_type", "EVENT"), ("description", "DESCRIPTION")]
        )
    return 0


@app.command
def delete(*message_ids: str, yes: bool = False, json: bool = False) -> int:
    """Remove messages that were not sent yet.

    Parameters
    ----------
    message_ids
        One or more message ids.
    yes
        Do not ask for confirmation on a terminal.
    json
        Print the POST /commands/delete-messages answer.
    """
    if not message_ids:
        raise UsageError("give at least one MESSAGE_ID")
    target = current()
    client = target.client()
    if not confirm(f"Delete {len(message_ids)} message(s)?", yes):
        raise CliError("not deleted")
    answer = client.post(
        "/commands/delete-messages", {"ids": list(message_ids)}, target.tenant_query()
    )
    missed = list(answer.get("not_found") or []) + list(answer.get("unauthorized") or [])
    if json:
        print_json(answer)
    else:
        print(f"removed {answer.get('removed', 0)}")
    if missed:
        raise CliError(f"not removed (unknown or already sent): {', '.join(map(str, missed))}")
    return 0


@app.command
def purge(*, older_than: float | None = None, yes: bool = False, json: bool = False) -> int:
    """Delete finished messages (sent or failed) whose reports were all acknowledged, with
    their events, when older than --older-than seconds. A spinner shows on a terminal while
    the server works; nothing on a pipe.

    Parameters
    ----------
    older_than
        Age in seconds (default: the instance's report retention, 7 days).
    yes
        Do not ask for confirmation on a terminal.
    json
        Print the POST /commands/cleanup-messages answer.
    """
    target = current()
    client = target.client()
    client.timeout = max(client.timeout, 600.0)
    age = "the report retention" if older_than is None else f"{older_than:g} s"
    if not confirm(f"Delete finished, reported messages older than {age}?", yes):
        raise CliError("nothing deleted")
    body: dict[str, Any] = {}
    if older_than is not None:
        body["older_than_seconds"] = older_than
    if target.tenant:
        body["tenant_id"] = target.tenant
    with Activity("purging"):
        answer = client.post("/commands/cleanup-messages", body, target.tenant_query())
    if json:
        print_json(answer)
    else:
        print(f"removed {answer.get('removed', 0)}")
    return 0
