"""``run-now``, ``suspend`` and ``activate`` (``/commands/*``).

With no tenant on the command line they act on the whole instance (the admin forms of the
API: all tenants for run-now, the scheduler for suspend/activate); with a tenant, on it
alone; ``--batch`` narrows suspend/activate to one batch code.
"""

from __future__ import annotations

from typing import Any

from mail_proxy.core.cli.output import print_fields, print_json
from mail_proxy.core.cli.target import current


def run_now(*, json: bool = False) -> int:
    """Wake dispatch and delivery reports now.

    Parameters
    ----------
    json
        Print the POST /commands/run-now answer.
    """
    answer = _command("run-now", None)
    if json:
        print_json(answer)
    else:
        print("woken")
    return 0


def suspend(*, batch: str | None = None, json: bool = False) -> int:
    """Stop dispatching: the whole instance, the tenant, or one batch code.

    Parameters
    ----------
    batch
        Only this batch code (of the tenant, `default` when none is named).
    json
        Print the POST /commands/suspend answer.
    """
    return _show(_command("suspend", batch), json)


def activate(*, batch: str | None = None, json: bool = False) -> int:
    """Resume dispatching: the whole instance, the tenant, or one batch code.

    Parameters
    ----------
    batch
        Only this batch code (of the tenant, `default` when none is named).
    json
        Print the POST /commands/activate answer.
    """
    return _show(_command("activate", batch), json)


def _command(name: str, batch: str | None) -> dict[str, Any]:
    target = current()
    body: dict[str, Any] = {}
    tenant = target.tenant or ("default" if batch else None)
    if tenant:
        body["tenant_id"] = tenant
    if batch:
        body["batch_code"] = batch
    query = {"tenant_id": tenant} if tenant else None
    return target.client().post(f"/commands/{name}", body, query)


def _show(answer: dict[str, Any], json: bool) -> int:
    if json:
        print_json(answer)
    else:
        print_fields(answer, [k for k in answer if k != "ok"])
    return 0
