"""``mail-proxy NAME [TENANT] suppressions list|add|remove``: a tenant's suppression list.

Addresses on it are refused at enqueue (``suppressed: ...``) unless a message says
``"ignore_suppression": true``; hard bounces for a bad address add them, ``remove`` takes one
off (docs/bounce.md "Suppression").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from cyclopts import App

from mail_proxy.core.cli.output import fmt_ts, print_fields, print_json, print_table
from mail_proxy.core.cli.target import current

app = App(name="suppressions", help="Suppressed addresses of a tenant (bounce plugin).")

COLUMNS = [
    ("address", "ADDRESS"),
    ("reason", "REASON"),
    ("code", "CODE"),
    ("source", "SOURCE"),
    ("message_id", "MESSAGE"),
    ("updated", "SINCE"),
]


@app.command(name="list")
def list_(*, json: bool = False) -> int:
    """List the suppressed addresses.

    Parameters
    ----------
    json
        Print the entries as the API returns them.
    """
    target = current()
    client = target.client()
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        answer = client.get(
            "/suppressions", {**target.tenant_query(), "limit": 1000, "cursor": cursor}
        )
        entries += answer.get("suppressions", [])
        cursor = answer.get("next_cursor")
        if not cursor:
            break
    if json:
        print_json({"ok": True, "suppressions": entries})
        return 0
    rows = [{**e, "updated": fmt_ts(e.get("updated_at"))} for e in entries]
    print_table(rows, COLUMNS, empty="(no suppressed address)")
    return 0


@app.command
def add(address: str, /, *, note: str | None = None, json: bool = False) -> int:
    """Suppress an address by hand.

    Parameters
    ----------
    address
        The address (name@example.com).
    note
        Why (kept with the entry).
    json
        Print the API answer.
    """
    target = current()
    body: dict[str, Any] = {"address": address, **target.tenant_query()}
    if note:
        body["note"] = note
    answer = target.client().post("/suppressions", body)
    if json:
        print_json(answer)
    else:
        print_fields(answer.get("suppression") or {}, ["address", "reason", "source", "note"])
    return 0


@app.command
def remove(address: str, /, *, json: bool = False) -> int:
    """Take an address off the list: messages to it are accepted again.

    Parameters
    ----------
    address
        The address.
    json
        Print the API answer.
    """
    target = current()
    answer = target.client().delete(
        f"/suppressions/{quote(address, safe='@')}", target.tenant_query()
    )
    if json:
        print_json(answer)
    else:
        print(f"removed {answer.get('removed')}")
    return 0
