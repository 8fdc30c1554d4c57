"""The PEC world of the plugin tests (fixtures in ``conftest.py``), all real parts on loopback:

- :class:`PecProviderSmtp`, a real SMTP server (aiosmtpd) playing the PEC provider: for each
  message it accepts it builds the receipts a provider would send (``support.pec_provider``:
  signed envelope, ``daticert.xml``, the headers of the real ones) and appends them with IMAP
  APPEND to the sender's mailbox on the test Dovecot, in order, after answering 250;
- the Dovecot of the ``dovecot`` fixture holds the PEC mailboxes (a user per test);
- the real service (the aiohttp app with every installed plugin, PEC included), on SQLite and
  on PostgreSQL, reporting to a real client app (:class:`ReportClient`).

What the provider answers is its ``plan``: a function of the received message returning the
receipts to append, :func:`plan` builds the usual ones (acceptance, then per recipient a
delivery or a delivery error).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mail_proxy.core.testing.reports import ReportClient
from support.ce_api import Api
from support.dovecot import Dovecot
from support.pec_provider import build_receipt

SENDER = "ufficio@pec.mittente.test"
DELIVERED = "protocollo@pec.destinatario.test"
REFUSED = "inesistente@pec.destinatario.test"
NO_DEST = "5.1.1 - Test PEC Provider - indirizzo non valido"


@dataclass
class Received:
    """One message the provider accepted."""

    message_id: str
    sender: str
    recipients: list[str]
    subject: str
    raw: bytes
    message: Message


Plan = Callable[[Received], list[bytes]]


def plan(
    *,
    accept: bool = True,
    errors: dict[str, str] | None = None,
    silent: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> Plan:
    """Acceptance (or non-accettazione when ``accept`` is False, then nothing else); per
    recipient an avvenuta-consegna, or an errore-consegna for those in ``errors`` (address →
    errore-esteso), nothing for those in ``silent``; then receipts of the ``extra`` kinds."""

    def answer(got: Received) -> list[bytes]:
        common = {
            "original_message_id": got.message_id,
            "sender": got.sender,
            "recipients": got.recipients,
            "subject": got.subject,
        }
        if not accept:
            return [build_receipt("non-accettazione", **common, error_detail="virus trovato")]
        out = [build_receipt("accettazione", **common)]
        for rcpt in got.recipients:
            if rcpt in silent:
                continue
            if errors and rcpt in errors:
                out.append(
                    build_receipt(
                        "errore-consegna", **common, recipient=rcpt, error_detail=errors[rcpt]
                    )
                )
            else:
                out.append(build_receipt("avvenuta-consegna", **common, recipient=rcpt))
        for kind in extra:
            out.append(build_receipt(kind, **common, recipient=got.recipients[0]))
        return out

    return answer


class _Handler:
    def __init__(self, owner: PecProviderSmtp) -> None:
        self.owner = owner

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.owner.data_reply:
            return self.owner.data_reply
        raw = bytes(envelope.original_content or b"")
        msg = message_from_bytes(raw, policy=compat32)
        got = Received(
            message_id=str(msg.get("Message-ID", "")).strip(),
            sender=parseaddr(str(msg.get("From", "")))[1] or str(envelope.mail_from),
            recipients=[r.lower() for r in envelope.rcpt_tos],
            subject=str(msg.get("Subject", "")),
            raw=raw,
            message=msg,
        )
        self.owner.received.append(got)
        task = asyncio.get_running_loop().create_task(self.owner.answer(got))
        self.owner.tasks.append(task)
        return "250 OK: accepted by the test PEC provider"


class PecProviderSmtp:
    """The provider's SMTP server (see the module docstring). ``mailboxes`` maps a sender
    address to its Dovecot user; ``delay`` is waited before the receipts are appended."""

    def __init__(self, dovecot: Dovecot) -> None:
        self.dovecot = dovecot
        self.mailboxes: dict[str, str] = {}
        self.plan: Plan = plan()
        self.delay = 0.0
        #: when set, the answer to DATA (e.g. a 5xx refusal) and no receipts
        self.data_reply: str | None = None
        self.received: list[Received] = []
        self.appended: list[tuple[str, bytes]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> PecProviderSmtp:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(_Handler(self), hostname="pec.provider.test"), host="127.0.0.1", port=0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def answer(self, got: Received) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        user = self.mailboxes[got.sender.lower()]
        for receipt in self.plan(got):
            await asyncio.to_thread(self.dovecot.append, user, receipt)
            self.appended.append((user, receipt))

    async def wait_received(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"provider got {len(self.received)}/{count}"
            await asyncio.sleep(0.02)
        return self.received

    async def settled(self) -> None:
        """Every receipt planned so far is in the mailbox."""
        await asyncio.gather(*self.tasks)


@dataclass
class PecWorld:
    """A started service with a PEC account on the provider and its Dovecot mailbox."""

    api: Api
    provider: PecProviderSmtp
    reports: ReportClient
    dovecot: Dovecot
    user: str
    password: str
    settings: dict[str, Any] = field(default_factory=dict)

    async def add_pec_account(
        self, account_id: str = "pec", sender: str = SENDER, **fields: Any
    ) -> dict[str, Any]:
        """A PEC account sending through the provider, its mailbox this world's user."""
        self.provider.mailboxes[sender.lower()] = self.user
        body = {
            "id": account_id,
            "host": "127.0.0.1",
            "port": self.provider.port,
            "default": True,
            "pec": True,
            "imap_host": self.dovecot.host,
            "imap_port": self.dovecot.port,
            "imap_user": self.user,
            "imap_password": self.password,
            "imap_use_tls": False,
            **fields,
        }
        return await self.api.post("/account", body)

    async def send(self, msg_id: str, to: list[str], sender: str = SENDER, **fields: Any) -> None:
        entry = {
            "id": msg_id,
            "from": sender,
            "to": to,
            "subject": f"Fattura {msg_id}",
            "body": "In allegato la fattura.",
            **fields,
        }
        answer = await self.api.send(entry)
        assert answer["queued"] == 1, answer

    async def pec_items(self, msg_id: str) -> list[dict[str, Any]]:
        return [i for i in self.reports.accepted_items() if i["id"] == msg_id and "pec_event" in i]

    async def wait_pec_items(
        self, msg_id: str, count: int, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        def enough() -> bool:
            found = [i for i in self.reports.accepted_items() if i["id"] == msg_id]
            return len([i for i in found if "pec_event" in i]) >= count

        await self.reports.wait_for(enough, timeout)
        return await self.pec_items(msg_id)

    async def stop(self) -> None:
        """Stop the service once the client acknowledged every report (a report the client
        took but whose answer the service did not read yet is sent again: at least once)."""
        storage = self.api.runtime.storage
        deadline = time.monotonic() + 10
        while any((await storage.report_backlog()).values()):
            assert time.monotonic() < deadline, "reports still unacknowledged"
            await asyncio.sleep(0.05)
        await self.api.client.close()

    async def message(self, msg_id: str) -> dict[str, Any]:
        return (await self.api.get(f"/messages/{msg_id}"))["message"]  # type: ignore[no-any-return]

    async def events(self, msg_id: str) -> list[dict[str, Any]]:
        return (await self.api.get(f"/messages/{msg_id}/events"))["events"]  # type: ignore[no-any-return]


def pec_overrides(reports: ReportClient, **overrides: Any) -> dict[str, Any]:
    """Settings of a test service: reports to ``reports``, short PEC intervals."""
    base: dict[str, Any] = {
        "client_sync_url": reports.url,
        "pec_poll_interval": 2.0,
        "pec_account_refresh": 1.0,
        "pec_timeout_check_interval": 0.2,
    }
    base.update(overrides)
    return base


def address_list(value: str) -> list[str]:
    return [addr.lower() for _, addr in getaddresses([value]) if addr]


def common(got: Received, **kw: Any) -> dict[str, Any]:
    return {
        "original_message_id": got.message_id,
        "sender": got.sender,
        "recipients": got.recipients,
        "subject": got.subject,
        **kw,
    }


async def metric(world: PecWorld, name: str, **labels: str) -> float:
    resp = await world.api.client.get("/metrics")
    text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
