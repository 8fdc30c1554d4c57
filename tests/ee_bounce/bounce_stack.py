"""What the bounce plugin's end-to-end tests run against, all real: the service
(``mail-proxy serve`` in its own process), an SMTP server (aiosmtpd) receiving what it sends,
a client application receiving delivery reports, and Dovecot holding the bounce mailbox.

Bounces are built from what the SMTP server received (:func:`postfix_dsn`,
:func:`qmail_bounce`) and put in the mailbox with IMAP APPEND, as a mail server delivering
them would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.reports import ReportClient
from mail_proxy.core.testing.service import ServiceProcess
from mail_proxy.core.testing.smtp import ReceivedMessage, SmtpTestServer
from support.dovecot import Dovecot

TOKEN = "bounce-admin-token-0123456789"
RETURN_PATH = "bounces@example.com"


@dataclass
class BounceStack:
    tmp: Path
    dovecot: Dovecot
    smtp: SmtpTestServer
    reports: ReportClient
    user: str
    password: str
    env: dict[str, str]
    svc: ServiceProcess | None = None
    extra: list[ServiceProcess] = field(default_factory=list)

    # -- the service ----------------------------------------------------------------------
    async def start(self, **env: str) -> ServiceProcess:
        self.env.update(env)
        self.svc = await ServiceProcess(self.env, self.tmp / "svc.log").start()
        return self.svc

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop()

    async def restart(self) -> None:
        self.stop()
        await self.start()

    async def api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        token: str = TOKEN,
        svc: ServiceProcess | None = None,
    ) -> tuple[int, dict[str, Any]]:
        svc = svc or self.svc
        assert svc is not None
        async with aiohttp.ClientSession() as session:
            async with session.request(
                method, svc.url + path, json=json, params=params, headers={"X-API-Token": token}
            ) as resp:
                return resp.status, await resp.json()

    async def ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        status, data = await self.api(method, path, **kw)
        assert status == 200, (method, path, status, data)
        return data

    async def metrics(self) -> str:
        assert self.svc is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(self.svc.url + "/metrics") as resp:
                return await resp.text()

    # -- configuration and sending --------------------------------------------------------
    def mailbox(self, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "enabled": True,
            "host": self.dovecot.host,
            "port": self.dovecot.port,
            "user": self.user,
            "password": self.password,
            "use_tls": False,
            "starttls": False,
            "poll_interval": 1.0,
            "return_path": RETURN_PATH,
        }
        config.update(overrides)
        return config

    async def configure(self, **overrides: Any) -> dict[str, Any]:
        return await self.ok("PUT", "/instance/bounce", json=self.mailbox(**overrides))

    async def add_account(self, tenant_id: str | None = None) -> None:
        body = {"id": "smtp", "host": "127.0.0.1", "port": self.smtp.port, "default": True}
        if tenant_id:
            body["tenant_id"] = tenant_id
        await self.ok("POST", "/account", json=body)

    async def send(
        self,
        msg_id: str,
        to: str = "nobody@example.org",
        tenant_id: str | None = None,
        **fields: Any,
    ) -> ReceivedMessage:
        """Enqueue one message and wait until the SMTP server has it; returns what it got."""
        before = len(self.smtp.messages)
        entry = {
            "id": msg_id,
            "from": "Shop <shop@example.com>",
            "to": [to],
            "subject": f"order {msg_id}",
            "body": "hello",
            **fields,
        }
        if tenant_id:
            entry["tenant_id"] = tenant_id
        answer = await self.ok("POST", "/commands/add-messages", json={"messages": [entry]})
        assert answer["queued"] == 1, answer
        received = await self.smtp.wait_for_messages(before + 1, timeout=15)
        return received[-1]

    def append(self, raw: bytes, user: str | None = None) -> int:
        return self.dovecot.append(user or self.user, raw)

    async def bounce_items(self, msg_id: str) -> list[dict[str, Any]]:
        return [
            i for i in self.reports.accepted_items() if i.get("id") == msg_id and "bounce_type" in i
        ]

    async def wait_bounces(self, msg_id: str, count: int = 1, timeout: float = 45.0) -> list[dict]:
        await self.reports.wait_for(
            lambda: (
                len(
                    [
                        i
                        for i in self.reports.accepted_items()
                        if i.get("id") == msg_id and "bounce_type" in i
                    ]
                )
                >= count
            ),
            timeout,
        )
        return await self.bounce_items(msg_id)

    async def wait_seen(self, count: int, user: str | None = None, timeout: float = 45.0) -> None:
        """Until ``count`` messages of the mailbox are flagged seen (read and processed)."""
        user = user or self.user
        deadline = time.monotonic() + timeout
        while True:
            total = self.dovecot.count(user)
            unseen = self.dovecot.count(user, unseen_only=True)
            if total - unseen >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{total - unseen}/{count} processed; log: {self.log_tail()}")
            await asyncio.sleep(0.1)

    def log_tail(self) -> str:
        path = self.tmp / "svc.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
async def stack(tmp_path: Path, dovecot: Dovecot) -> AsyncIterator[BounceStack]:
    user, password = dovecot.new_user("b")
    async with SmtpTestServer() as smtp, ReportClient() as reports:
        env = {
            "GMP_API_TOKEN": TOKEN,
            "GMP_DATABASE_URL": f"sqlite:///{tmp_path / 'gmp.db'}",
            "MAIL_PROXY_ENCRYPTION_KEY": generate_key(),
            "GMP_CLIENT_SYNC_URL": reports.url,
            "GMP_SYNC_INTERVAL": "1",
            "GMP_SEND_LOOP_INTERVAL": "0.05",
            "GMP_LOG_LEVEL": "INFO",
            "GMP_BOUNCE_CONFIG_REFRESH": "1",
        }
        s = BounceStack(tmp_path, dovecot, smtp, reports, user, password, env)
        try:
            yield s
        finally:
            for extra in s.extra:
                extra.stop()
            s.stop()


# -- bounces as servers write them ------------------------------------------------------------
def _headers_of(received: ReceivedMessage) -> str:
    raw = received.raw.replace(b"\r\n", b"\n")
    return raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")


def postfix_dsn(
    received: ReceivedMessage,
    recipient: str | None = None,
    *,
    status: str = "5.1.1",
    diagnostic: str | None = None,
    quote_headers: bool = True,
    deliver_to: str | None = None,
    bounce_id: str | None = None,
    headers_text: str | None = None,
) -> bytes:
    """A Postfix DSN (multipart/report) for ``recipient`` of ``received``, delivered to its
    envelope sender (the VERP address) unless ``deliver_to`` says otherwise; quoting the
    original's headers (``text/rfc822-headers``) unless ``quote_headers`` is false."""
    rcpt = recipient or received.rcpt_tos[0]
    to = deliver_to or received.mail_from
    code = "550" if status.startswith("5") else "452"
    diag = diagnostic or (
        f"{code} {status} <{rcpt}>: Recipient address rejected: User unknown in local "
        "recipient table"
        if status == "5.1.1"
        else f"{code} {status} <{rcpt}>: Mailbox full, try again later"
    )
    action = "failed" if status.startswith("5") else "delayed"
    boundary = f"B{uuid.uuid4().hex[:12]}"
    original = headers_text if headers_text is not None else _headers_of(received)
    parts = [
        f"Return-Path: <>\nDelivered-To: {to}\nX-Original-To: {to}\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n"
        f"To: {to}\nSubject: Undelivered Mail Returned to Sender\n"
        f"Date: {formatdate()}\nMessage-ID: <{bounce_id or uuid.uuid4().hex}@mx.example.org>\n"
        "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n',
        f"--{boundary}\nContent-Description: Notification\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
        "This is the mail system at host mx.example.org.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n"
        f"<{rcpt}>: host mx.example.org[192.0.2.25] said: {diag} (in reply to RCPT TO "
        "command)\n",
        f"--{boundary}\nContent-Description: Delivery report\n"
        "Content-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\nX-Postfix-Queue-ID: 4F2A81C0\n"
        f"Arrival-Date: {formatdate()}\n\n"
        f"Final-Recipient: rfc822; {rcpt}\nOriginal-Recipient: rfc822;{rcpt}\n"
        f"Action: {action}\nStatus: {status}\nRemote-MTA: dns; mx.example.org\n"
        f"Diagnostic-Code: smtp; {diag}\n",
    ]
    if quote_headers:
        parts.append(
            f"--{boundary}\nContent-Description: Undelivered Message Headers\n"
            f"Content-Type: text/rfc822-headers\n\n{original}\n"
        )
    parts.append(f"--{boundary}--\n")
    return "\n".join(parts).replace("\n", "\r\n").encode()


def qmail_bounce(received: ReceivedMessage, recipient: str | None = None) -> bytes:
    """A qmail-style plain-text bounce that quotes nothing of the original: only the address
    it is delivered to (the VERP envelope sender) names the message."""
    rcpt = recipient or received.rcpt_tos[0]
    to = received.mail_from
    text = (
        f"Return-Path: <>\nDelivered-To: {to}\n"
        "From: MAILER-DAEMON@mail.example.net\n"
        f"To: {to}\nSubject: failure notice\nDate: {formatdate()}\n"
        f"Message-ID: <{uuid.uuid4().hex}@mail.example.net>\n\n"
        "Hi. This is the qmail-send program at mail.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        f"<{rcpt}>:\n192.0.2.7 does not like recipient.\n"
        "Remote host said: 550 5.1.1 Sorry, no mailbox here by that name.\n"
        "Giving up on 192.0.2.7.\n\n"
        "--- Below this line is the original message, headers removed by policy.\n"
    )
    return text.replace("\n", "\r\n").encode()
