"""``mail-proxy NAME [TENANT] accounts list|add|delete`` over ``/accounts`` and ``/account``."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from cyclopts import App, Parameter

from mail_proxy.core.cli.errors import CliError, UsageError
from mail_proxy.core.cli.home import warn
from mail_proxy.core.cli.output import print_fields, print_json, print_table
from mail_proxy.core.cli.prompt import confirm, interactive, optional, require, yes_no
from mail_proxy.core.cli.target import current

app = App(name="accounts", help="SMTP accounts of a tenant.")

COLUMNS = [
    ("id", "ID"),
    ("transport", "TRANSPORT"),
    ("host", "HOST"),
    ("port", "PORT"),
    ("user", "USER"),
    ("default", "DEFAULT"),
    ("limits", "LIMITS m/h/d"),
    ("limit_behavior", "OVER LIMIT"),
]


@app.command(name="list")
def list_accounts(*, json: bool = False) -> int:
    """List the tenant's accounts (passwords are never shown).

    Parameters
    ----------
    json
        Print the GET /accounts answer.
    """
    target = current()
    answer = target.client().get("/accounts", target.tenant_query())
    if json:
        print_json(answer)
        return 0
    rows = [{**a, "limits": _limits(a)} for a in answer.get("accounts", [])]
    print_table(rows, COLUMNS, empty="(no accounts: add one with accounts add)")
    return 0


@app.command
def add(
    account_id: str | None = None,
    /,
    *,
    host: str | None = None,
    port: int | None = None,
    transport: str | None = None,
    option: list[str] | None = None,
    user: str | None = None,
    password: str | None = None,
    use_tls: Annotated[bool | None, Parameter(negative="--no-use-tls")] = None,
    starttls: Annotated[bool | None, Parameter(negative="--no-starttls")] = None,
    allow_plaintext_auth: Annotated[
        bool | None, Parameter(negative="--no-allow-plaintext-auth")
    ] = None,
    timeout: float | None = None,
    message_timeout: float | None = None,
    max_connections: int | None = None,
    batch_size: int | None = None,
    limit_per_minute: int | None = None,
    limit_per_hour: int | None = None,
    limit_per_day: int | None = None,
    limit_behavior: Literal["defer", "reject"] | None = None,
    default: Annotated[bool | None, Parameter(negative="--no-default")] = None,
    json: bool = False,
) -> int:
    """Add an SMTP account, or update the one with the same id.

    Values not given are asked for on a terminal (the password without echo); without a
    terminal, ACCOUNT_ID and --host (for smtp) are required and the rest is optional.

    Parameters
    ----------
    account_id
        Account id, unique in the tenant.
    host
        SMTP server host name.
    port
        SMTP port (465: implicit TLS; else STARTTLS when offered). Default 587.
    transport
        smtp (default), file (write .eml files: --option directory=PATH) or a plugin's.
    option
        Transport option KEY=VALUE (repeatable).
    user
        SMTP user name.
    password
        SMTP password (stored encrypted). Prefer the prompt: options show in `ps`.
    use_tls
        Implicit TLS (default: only on port 465).
    starttls
        Require STARTTLS (no plaintext fallback); --no-starttls: never insist on it.
    allow_plaintext_auth
        Allow the password over an unencrypted connection (trusted network only).
    timeout
        Seconds to wait for each SMTP reply.
    message_timeout
        Seconds one message's SMTP transaction may take in all.
    max_connections
        SMTP connections open at once for this account (per instance).
    batch_size
        Most messages sent per round for this account.
    limit_per_minute
        Sends per minute (0 = no limit).
    limit_per_hour
        Sends per hour (0 = no limit).
    limit_per_day
        Sends per day (0 = no limit).
    limit_behavior
        Over a limit: defer (wait) or reject (fail).
    default
        Use this account for messages that name none. When neither --default nor
        --no-default is given and the tenant has no default account, the question is asked
        on a terminal; without a terminal the tenant's first account becomes the default.
    json
        Print the POST /account answer.
    """
    target = current()
    client = target.client()  # fail before prompting when the instance is down
    account_id = require(account_id, "ACCOUNT_ID", "Account id")
    options = _options(option or [])
    if transport in (None, "smtp"):
        host = require(host, "--host", "SMTP host")
        if port is None and interactive():
            port = require(None, "--port", "SMTP port", parse=int, default=587)
        user = optional(user, "SMTP user")
        if user and password is None:
            password = optional(None, "SMTP password", secret=True)
    if default is None:
        default = _default_choice(client.get("/accounts", target.tenant_query()), account_id)
    body: dict[str, Any] = {"id": account_id}
    values = {
        "host": host,
        "transport": transport,
        "options": options or None,
        "port": port,
        "user": user,
        "password": password,
        "use_tls": use_tls,
        "starttls": starttls,
        "allow_plaintext_auth": allow_plaintext_auth,
        "timeout": timeout,
        "message_timeout": message_timeout,
        "max_connections": max_connections,
        "batch_size": batch_size,
        "limit_per_minute": limit_per_minute,
        "limit_per_hour": limit_per_hour,
        "limit_per_day": limit_per_day,
        "limit_behavior": limit_behavior,
        "default": default,
    }
    body.update({k: v for k, v in values.items() if v is not None})
    if target.tenant:
        body["tenant_id"] = target.tenant
    answer = client.post("/account", body)
    if json:
        print_json(answer)
        return 0
    account = answer.get("account") or {}
    print(f"account {account.get('id', account_id)!r} saved")
    print_fields(
        account, [k for k in ("tenant_id", "host", "port", "user", "default") if k in account]
    )
    return 0


@app.command
def delete(account_id: str | None = None, /, *, yes: bool = False, json: bool = False) -> int:
    """Delete an account.

    Parameters
    ----------
    account_id
        Account id.
    yes
        Do not ask for confirmation on a terminal.
    json
        Print the DELETE answer.
    """
    target = current()
    client = target.client()
    account_id = require(account_id, "ACCOUNT_ID", "Account id")
    if not confirm(f"Delete account {account_id!r}?", yes):
        raise CliError("not deleted")
    answer = client.delete(f"/account/{quote(account_id, safe='')}", target.tenant_query())
    if json:
        print_json(answer)
    else:
        print(f"account {account_id!r} deleted")
    return 0


def _default_choice(listed: dict[str, Any], account_id: str) -> bool | None:
    """``--default``/``--no-default`` not given: when the tenant has no default account, ask on
    a terminal (Enter = yes); without a terminal, the tenant's first account becomes the
    default. None leaves the flag as the server has it."""
    accounts = list(listed.get("accounts") or [])
    if any(a.get("default") for a in accounts):
        return None  # the tenant has one (this account, or another that stays the default)
    first = all(a.get("id") == account_id for a in accounts)
    if interactive():
        return yes_no(
            f"Make {account_id!r} the tenant's default account (used by messages that name none)?",
            default=True,
        )
    if first:
        return True
    warn(
        "the tenant has no default account: messages must name their account_id "
        f"(make one the default with: accounts add {account_id} --default)"
    )
    return None


def _options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid --option {pair!r}: use KEY=VALUE")
        out[key] = value
    return out


def _limits(account: dict[str, Any]) -> str:
    values = [account.get(f"limit_per_{p}") for p in ("minute", "hour", "day")]
    return "/".join(str(v) if v else "-" for v in values)
