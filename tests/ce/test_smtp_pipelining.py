"""The mail transaction with and without PIPELINING (RFC 2920), against real servers.

Every outcome test runs twice: against aiosmtpd offering PIPELINING (the test server adds it
to its EHLO reply) and against the same server not offering it. What the client writes is
seen through :class:`SmtpProxy`, which records each read of the client's bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mail_proxy.ce.transport.smtp import SmtpTransport
from mail_proxy.core.contracts.transport import TransportError
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.smtp_proxy import SmtpProxy
from support.smtp_send import account_for, payload, send

THREE = ["a@example.com", "b@example.com", "c@example.com"]


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
async def server(
    request: pytest.FixtureRequest, smtp_server_factory: Callable[..., Any]
) -> SmtpTestServer:
    started: SmtpTestServer = await smtp_server_factory(pipelining=request.param)
    return started


@pytest.fixture
def transport(
    smtp_runtime: Callable[..., Runtime], smtp_transport_factory: Callable[..., SmtpTransport]
) -> SmtpTransport:
    made: SmtpTransport = smtp_transport_factory(smtp_runtime())
    return made


@pytest.fixture
async def proxy(server: SmtpTestServer) -> AsyncIterator[SmtpProxy]:
    async with SmtpProxy(server.port) as started:
        yield started


def commands_written(proxy: SmtpProxy) -> list[bytes]:
    """The client's reads (writes) on the first connection after EHLO, content excluded."""
    chunks = [c for c in proxy.client_chunks[0] if not c.upper().startswith(b"EHLO")]
    return [c for c in chunks if c[:4].upper() in (b"MAIL", b"RCPT", b"DATA", b"RSET")]


async def test_envelope_in_one_write_when_offered(
    server: SmtpTestServer, proxy: SmtpProxy, transport: SmtpTransport
) -> None:
    result = await send(transport, account_for(server, proxy.port), payload(to=THREE))
    assert result.accepted == THREE
    assert server.messages[0].rcpt_tos == THREE
    written = commands_written(proxy)
    if server.pipelining:
        # MAIL, the three RCPT and DATA together; then the content (with its final ".")
        assert len(written) == 1
        assert written[0].count(b"\r\n") == 5 and written[0].endswith(b"DATA\r\n")
    else:
        assert [w.split(b":")[0].split()[0] for w in written] == [b"MAIL"] + [b"RCPT"] * 3 + [
            b"DATA"
        ]


async def test_mixed_recipients_250_550_451(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    server.script_rcpt = {
        "b@example.com": "550 5.1.1 no such user",
        "c@example.com": "451 4.3.0 try again later",
    }
    account = account_for(server)
    result = await send(transport, account, payload(to=THREE))
    assert result.accepted == ["a@example.com"]
    assert result.perm_failed == {"b@example.com": (550, "5.1.1 no such user")}
    assert result.temp_failed == {"c@example.com": (451, "4.3.0 try again later")}
    assert [m.rcpt_tos for m in server.messages] == [["a@example.com"]]
    # a transaction with refused recipients still succeeded: no RSET, the session goes on
    await send(transport, account, mail_id="m2")
    assert server.connection_count == 1
    assert "RSET" not in server.connection(1).commands


async def test_every_recipient_refused_sends_no_content(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    server.script_rcpt = {
        "a@example.com": "550 5.1.1 no such user",
        "b@example.com": "451 4.2.0 mailbox busy",
    }
    account = account_for(server)
    result = await send(transport, account, payload(to=["a@example.com", "b@example.com"]))
    assert result.accepted == []
    assert result.perm_failed == {"a@example.com": (550, "5.1.1 no such user")}
    assert result.temp_failed == {"b@example.com": (451, "4.2.0 mailbox busy")}
    assert server.messages == [] and server.refused_data == []
    commands = server.connection(1).commands
    # pipelined: DATA went with the envelope and was refused (503); else it was never sent
    assert commands == (["MAIL", "DATA", "RSET"] if server.pipelining else ["MAIL", "RSET"])
    # the session was reset and carries the next message
    server.script_rcpt = {}
    assert (await send(transport, account, mail_id="m2")).accepted == ["a@example.com"]
    assert server.connection_count == 1


@pytest.mark.parametrize("reply", ["554 5.7.1 not now", "451 4.3.0 busy"])
async def test_data_command_refused(
    server: SmtpTestServer, transport: SmtpTransport, reply: str
) -> None:
    server.data_command_reply = reply
    account = account_for(server)
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    code = int(reply[:3])
    assert (err.value.code, err.value.permanent) == (code, code >= 500)
    assert server.messages == []
    assert server.connection(1).commands[-1] == "RSET"
    server.data_command_reply = None
    assert (await send(transport, account, mail_id="m2")).accepted == ["a@example.com"]
    assert server.connection_count == 1


async def test_sender_refused_stops_the_transaction(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    server.mail_reply = "553 5.7.1 sender not allowed"
    account = account_for(server)
    with pytest.raises(TransportError) as err:
        await send(transport, account, payload(to=THREE))
    assert (err.value.code, err.value.permanent) == (553, True)
    assert server.messages == []
    server.mail_reply = None
    assert (await send(transport, account, mail_id="m2")).accepted == ["a@example.com"]
    assert server.connection_count == 1


async def test_final_reply_refused_after_the_content(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    server.data_replies.append("452 4.3.1 insufficient storage")
    account = account_for(server)
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert (err.value.code, err.value.permanent) == (452, False)
    assert len(server.refused_data) == 1
    assert (await send(transport, account, mail_id="m2")).accepted == ["a@example.com"]
    assert server.connection_count == 1


# -- a server that breaks off mid-reply ----------------------------------------------------
class CutServer:
    """A tiny SMTP server that offers PIPELINING, answers the pipelined envelope with the
    MAIL reply and half of the first RCPT reply, then closes the connection."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.received = b""
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> CutServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 cut.test ESMTP\r\n")
        line = await reader.readline()
        assert line.upper().startswith(b"EHLO")
        writer.write(b"250-cut.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        while b"DATA\r\n" not in self.received:
            chunk = await reader.read(65536)
            if not chunk:
                break
            self.received += chunk
        writer.write(b"250 2.1.0 sender ok\r\n250 2.1.5 rec")
        await writer.drain()
        writer.close()


async def test_reply_cut_mid_way_is_temporary_and_the_connection_is_dropped(
    rt: Runtime, smtp_transport_factory: Callable[..., SmtpTransport]
) -> None:
    transport = smtp_transport_factory(rt)
    async with CutServer() as cut:
        account = account_for(SmtpTestServer(), cut.port)
        with pytest.raises(TransportError) as err:
            await send(transport, account, payload(to=["a@example.com", "b@example.com"]))
        assert err.value.permanent is False
        assert "mid-reply" in str(err.value) or "connection lost" in str(err.value)
        assert cut.received.count(b"RCPT TO:") == 2  # the whole envelope went in one go
        assert transport.open_connections == 0  # not kept for the next message
        with pytest.raises(TransportError):
            await send(transport, account, mail_id="m2")
        assert cut.connections == 2


@pytest.fixture
def rt(smtp_runtime: Callable[..., Runtime]) -> Runtime:
    return smtp_runtime()
