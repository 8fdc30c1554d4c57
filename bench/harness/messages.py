"""Message payloads shared by the load generator and the ceiling client."""

from __future__ import annotations

from typing import Any

SENDER = "Bench Sender <bench@example.com>"
RECIPIENT = "rcpt@example.com"
MAIL_ID_HEADER = "X-Genro-Mail-ID"


def filler(size: int) -> str:
    """A plain-text body of about ``size`` bytes, in lines of 72 characters."""
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod t\n"
    return (line * (size // len(line) + 1))[:size]


def message_ids(prefix: str, start: int, count: int) -> list[str]:
    """The ids ``prefix-start`` … ``prefix-(start+count-1)``, as the sink reads them back."""
    return [f"{prefix}-{i}" for i in range(start, start + count)]


def api_message(
    ident: str,
    body: str,
    attachments: list[dict[str, Any]] | None = None,
    account_id: str | None = None,
) -> dict[str, Any]:
    """One entry of ``POST /commands/add-messages`` (the default account unless named)."""
    msg: dict[str, Any] = {
        "id": ident,
        "from": SENDER,
        "to": [RECIPIENT],
        "subject": f"Benchmark message {ident}",
        "body": body,
    }
    if attachments:
        msg["attachments"] = attachments
    if account_id:
        msg["account_id"] = account_id
    return msg
