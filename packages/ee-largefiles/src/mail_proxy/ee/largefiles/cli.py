"""``mail-proxy NAME large-files list|purge|test``.

REST calls to the running instance with its admin token: ``GET /large-files``,
``POST /large-files/purge``, ``POST /instance/large-files/test``. Without ``--tenant`` the
commands cover every tenant (``test``: the default tenant).
"""

from __future__ import annotations

from typing import Any

from cyclopts import App

from mail_proxy.core.cli.errors import CliError
from mail_proxy.core.cli.output import fmt_ts, print_fields, print_json, print_table
from mail_proxy.core.cli.prompt import confirm
from mail_proxy.core.cli.target import current

app = App(name="large-files", help="Offloaded attachments (large-files plugin).")

COLUMNS = [
    ("tenant_id", "TENANT"),
    ("message_id", "MESSAGE"),
    ("filename", "FILE"),
    ("size_mb", "MB"),
    ("state", "STATE"),
    ("expires", "EXPIRES"),
    ("file_id", "FILE ID"),
]


@app.command(name="list")
def list_files(*, expired: bool = False, tenant: str | None = None, json: bool = False) -> int:
    """List the offloaded files (every tenant's unless --tenant).

    Parameters
    ----------
    expired
        Only files whose link has expired (the next cleanup deletes them).
    tenant
        Only this tenant's files.
    json
        Print the files as the API returns them.
    """
    client = current().client()
    files: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"expired": expired, "tenant_id": tenant, "limit": 1000, "cursor": cursor}
        answer = client.get("/large-files", query)
        files.extend(answer.get("files", []))
        cursor = answer.get("next_cursor")
        if not cursor:
            break
    if json:
        print_json({"ok": True, "files": files})
        return 0
    rows = [
        {
            **f,
            "size_mb": None if f.get("size") is None else f"{f['size'] / 1048576:.1f}",
            "expires": fmt_ts(f.get("expires_at")),
        }
        for f in files
    ]
    print_table(rows, COLUMNS, empty="(no offloaded files)")
    return 0


@app.command
def purge(
    *, expired: bool = False, tenant: str | None = None, yes: bool = False, json: bool = False
) -> int:
    """Delete offloaded files from the storage, with their records.

    Parameters
    ----------
    expired
        Only files whose link has expired (what the cleanup service does).
    tenant
        Only this tenant's files.
    yes
        Do not ask for confirmation on a terminal.
    json
        Print the API answer.
    """
    if not expired:
        whose = f"tenant {tenant!r}" if tenant else "every tenant"
        question = f"Delete ALL offloaded files of {whose}? Links already sent stop working."
        if not confirm(question, yes):
            raise CliError("nothing deleted")
    body: dict[str, Any] = {"expired": expired}
    if tenant:
        body["tenant_id"] = tenant
    answer = current().client().post("/large-files/purge", body)
    if json:
        print_json(answer)
        return 0
    print(f"{answer.get('deleted', 0)} file(s) deleted")
    if answer.get("failed"):
        print(f"{answer['failed']} file(s) could not be deleted (see the server log)")
        return 1
    return 0


@app.command
def test(*, tenant: str | None = None, json: bool = False) -> int:
    """Write, read and delete a probe object in the configured storage.

    Parameters
    ----------
    tenant
        Test this tenant's configuration (default: the default tenant's).
    json
        Print the API answer.
    """
    query = {"tenant_id": tenant} if tenant else None
    answer = current().client().post("/instance/large-files/test", {}, query=query)
    if json:
        print_json(answer)
        return 0
    print_fields(answer, ["tenant_id", "storage_url", "links", "elapsed_ms"])
    print("storage ok: a probe object was written, read back and deleted")
    return 0
