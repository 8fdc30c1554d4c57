"""Building and sending test messages straight through a transport (no service around it)."""

from __future__ import annotations

from typing import Any

from mail_proxy.ce.transport.smtp import SmtpTransport
from mail_proxy.core.contracts.model import Account
from mail_proxy.core.contracts.transport import SendResult
from mail_proxy.core.engine.mime import Attachment, build_email, envelope, new_message_id
from mail_proxy.core.testing.smtp import SmtpTestServer


def account_for(server: SmtpTestServer, port: int | None = None, **kw: Any) -> Account:
    """An account for ``server`` (or for ``port``: a proxy in front of it), trusting its CA."""
    options = {**server.client_options(), **kw.pop("options", {})}
    return Account(
        tenant_id=kw.pop("tenant_id", "default"),
        id=kw.pop("id", "acc"),
        host="127.0.0.1",
        port=port or server.port,
        timeout=kw.pop("timeout", 5.0),
        options=options,
        **kw,
    )


def payload(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from": "Sender <sender@example.com>",
        "to": ["a@example.com"],
        "subject": "Hello",
        "body": "Hello world\n",
    }
    base.update(kw)
    return base


def build(p: dict[str, Any], mail_id: str = "m1", attachments: list[Attachment] | None = None):  # type: ignore[no-untyped-def]
    email = build_email(
        p, message_id=new_message_id(p["from"]), mail_id=mail_id, attachments=attachments or []
    )
    sender, rcpts = envelope(p)
    return email, sender, rcpts


async def send(
    transport: SmtpTransport,
    account: Account,
    p: dict[str, Any] | None = None,
    mail_id: str = "m1",
    attachments: list[Attachment] | None = None,
) -> SendResult:
    email, sender, rcpts = build(p or payload(), mail_id, attachments)
    return await transport.send(account, email, sender, rcpts)
