"""The SMTP and file transports against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
import trustme

from mail_proxy.ce.transport import register
from mail_proxy.ce.transport.file import FileTransport
from mail_proxy.ce.transport.smtp import SmtpTransport
from mail_proxy.core.contracts.model import Account
from mail_proxy.core.contracts.transport import TransportError
from mail_proxy.core.engine.encryption import account_password_context
from mail_proxy.core.engine.mime import Attachment, build_email, envelope, new_message_id
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.registry import Registry
from mail_proxy.core.testing.net import free_port
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.smtp_proxy import SmtpProxy
from support.smtp_send import account_for, build, payload, send

PASSWORD = "Sup3r-Secret-Pa55word"


@pytest.fixture
def rt(smtp_runtime: Callable[..., Runtime]) -> Runtime:
    return smtp_runtime()


@pytest.fixture
def transport(rt: Runtime, smtp_transport_factory: Callable[..., SmtpTransport]) -> SmtpTransport:
    return smtp_transport_factory(rt)


# -- content on the wire ---------------------------------------------------------------------
async def test_delivers_headers_envelope_and_attachments(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    binary = bytes(range(256)) * 300
    text_file = "colonne;valori\nà;è\n".encode()
    p = payload(
        to="a@example.com, Bee <b@example.com>",
        cc=["c@example.com"],
        bcc=["hidden@example.com"],
        return_path="bounces@example.com",
        body="plain text",
        body_html="<p>html text</p>",
        headers={"X-Campaign": "spring"},
    )
    mid = new_message_id(p["from"])
    email = build_email(
        p,
        message_id=mid,
        mail_id="client-42",
        attachments=[
            Attachment("résumé été.pdf", binary, None),
            Attachment("dati.csv", text_file, "text/csv"),
        ],
    )
    sender, rcpts = envelope(p)
    result = await transport.send(account_for(smtp_server), email, sender, rcpts)

    assert result.accepted == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "hidden@example.com",
    ]
    assert not result.temp_failed and not result.perm_failed
    assert result.response
    [got] = smtp_server.messages
    assert got.mail_from == "bounces@example.com"
    assert got.rcpt_tos == result.accepted
    assert b"hidden@example.com" not in got.raw
    assert b"bcc" not in got.raw.lower().split(b"\r\n\r\n", 1)[0]
    msg = got.message
    assert msg["Message-ID"] == mid
    assert msg["X-Genro-Mail-ID"] == "client-42"
    assert msg["X-Campaign"] == "spring"
    assert msg["Date"].datetime is not None
    assert "Return-Path" not in msg
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(preferencelist=("related", "html", "plain"))
    assert body is not None
    alternative = next(msg.iter_parts())
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["résumé été.pdf", "dati.csv"]
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[1].get_content_type() == "text/csv"
    sha = [hashlib.sha256(a.get_payload(decode=True)).hexdigest() for a in attachments]
    assert sha == [hashlib.sha256(binary).hexdigest(), hashlib.sha256(text_file).hexdigest()]
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9" in got.raw


async def test_large_attachment_is_streamed_exactly_with_its_size_announced(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    # 6 MB: several slices of the streamed DATA, more than the socket buffers take at once
    blob = os.urandom(6 * 1024 * 1024)
    p = payload(body=".a line starting with a dot\n..and two\n")
    result = await send(
        transport, account_for(smtp_server), p, attachments=[Attachment("big.bin", blob, None)]
    )
    assert result.accepted == ["a@example.com"]
    [got] = smtp_server.messages
    [attachment] = got.message.iter_attachments()
    assert (
        hashlib.sha256(attachment.get_payload(decode=True)).digest()
        == hashlib.sha256(blob).digest()
    )
    body = got.message.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().splitlines() == [".a line starting with a dot", "..and two"]
    # SIZE (RFC 1870) is the octet count on the wire: the content plus one "." per stuffed line
    [size] = [o for o in got.mail_options if o.upper().startswith("SIZE=")]
    assert int(size.split("=", 1)[1]) == len(got.raw) + 2


# -- the pool ----------------------------------------------------------------------------------
async def test_pool_reuses_one_connection(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    account = account_for(smtp_server)
    for i in range(3):
        await send(transport, account, mail_id=f"m{i}")
    assert len(smtp_server.messages) == 3
    assert smtp_server.connection_count == 1
    assert {m.connection_id for m in smtp_server.messages} == {1}
    assert transport.connections_opened == 1


async def test_idle_connections_are_closed_after_idle_timeout(
    smtp_server: SmtpTestServer,
    smtp_runtime: Callable[..., Runtime],
    smtp_transport_factory: Callable[..., SmtpTransport],
) -> None:
    transport = smtp_transport_factory(smtp_runtime(smtp_idle_timeout=0.2))
    account = account_for(smtp_server)
    await send(transport, account)
    assert len(smtp_server.open_connections) == 1
    await smtp_server.wait_until(lambda: not smtp_server.open_connections, timeout=5)
    assert smtp_server.connection(1).commands[-1] == "QUIT"
    await send(transport, account, mail_id="m2")
    assert smtp_server.connection_count == 2


async def test_noop_checks_a_connection_idle_for_a_while(
    smtp_server: SmtpTestServer,
    rt: Runtime,
    smtp_transport_factory: Callable[..., SmtpTransport],
) -> None:
    transport = smtp_transport_factory(rt, noop_after=0.0)
    account = account_for(smtp_server)
    await send(transport, account)
    await asyncio.sleep(0.01)
    await send(transport, account, mail_id="m2")
    assert smtp_server.connection_count == 1
    assert smtp_server.connection(1).commands == ["MAIL", "DATA", "NOOP", "MAIL", "DATA"]


async def test_connection_closed_by_server_is_replaced(
    smtp_server: SmtpTestServer,
    rt: Runtime,
    smtp_transport_factory: Callable[..., SmtpTransport],
) -> None:
    transport = smtp_transport_factory(rt, noop_after=0.0)
    account = account_for(smtp_server)
    await send(transport, account)
    smtp_server.drop_all_connections()
    await smtp_server.wait_until(lambda: not smtp_server.open_connections)
    result = await send(transport, account, mail_id="m2")
    assert result.accepted == ["a@example.com"]
    assert smtp_server.connection_count == 2
    assert smtp_server.messages[1].connection_id == 2


async def test_at_most_max_connections_of_the_account(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    smtp_server.data_delay = 0.1
    account = account_for(smtp_server, max_connections=2)
    results = await asyncio.gather(*(send(transport, account, mail_id=f"m{i}") for i in range(6)))
    assert all(r.accepted == ["a@example.com"] for r in results)
    assert len(smtp_server.messages) == 6
    assert smtp_server.connection_count == 2


async def test_accounts_have_separate_pools_and_an_edit_starts_a_new_one(
    smtp_server_factory: Callable[..., Any], rt: Runtime, transport: SmtpTransport
) -> None:
    server = await smtp_server_factory(starttls=True, auth=("user", PASSWORD))
    one = account_for(
        server, id="one", user="user", password_enc=rt.encrypt(PASSWORD, pw_place("one"))
    )
    two = account_for(
        server, id="two", user="user", password_enc=rt.encrypt(PASSWORD, pw_place("two"))
    )
    await send(transport, one)
    await send(transport, two)
    assert server.connection_count == 2
    await send(transport, one)
    assert server.connection_count == 2
    # The account is saved again with a new password token: its old pool is not reused.
    one.password_enc = rt.encrypt(PASSWORD, pw_place("one"))
    await send(transport, one)
    assert server.connection_count == 3
    assert [a.success for a in server.auth_attempts] == [True, True, True]


async def test_close_quits_pooled_connections(smtp_server: SmtpTestServer, rt: Runtime) -> None:
    transport = SmtpTransport(rt)
    await send(transport, account_for(smtp_server))
    await transport.close()
    await smtp_server.wait_until(lambda: not smtp_server.open_connections)
    assert smtp_server.connection(1).commands[-1] == "QUIT"
    with pytest.raises(TransportError) as err:
        await send(transport, account_for(smtp_server))
    assert err.value.permanent is False


# -- error classification -------------------------------------------------------------------------
async def test_data_4xx_is_temporary_and_the_connection_is_kept(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    smtp_server.data_replies.append("451 4.3.0 try again later")
    account = account_for(smtp_server)
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is False
    assert err.value.code == 451
    assert "451" in str(err.value)
    result = await send(transport, account, mail_id="m2")
    assert result.accepted == ["a@example.com"]
    assert smtp_server.connection_count == 1


async def test_data_5xx_is_permanent(smtp_server: SmtpTestServer, transport: SmtpTransport) -> None:
    smtp_server.data_replies.append("554 5.6.0 message content rejected")
    with pytest.raises(TransportError) as err:
        await send(transport, account_for(smtp_server))
    assert err.value.permanent is True
    assert err.value.code == 554
    assert smtp_server.messages == []


async def test_sender_refused_5xx_is_permanent(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    smtp_server.mail_reply = "550 5.7.1 sender not allowed"
    with pytest.raises(TransportError) as err:
        await send(transport, account_for(smtp_server))
    assert (err.value.permanent, err.value.code) == (True, 550)


async def test_disconnect_during_data_is_temporary(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    smtp_server.drop_data = 1
    account = account_for(smtp_server)
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is False
    assert err.value.code is None
    assert len(smtp_server.dropped) == 1
    result = await send(transport, account, mail_id="m2")
    assert result.accepted == ["a@example.com"]
    assert smtp_server.messages[0].connection_id == 2


async def test_connection_refused_is_temporary(rt: Runtime, transport: SmtpTransport) -> None:
    account = Account(tenant_id="default", id="acc", host="127.0.0.1", port=free_port())
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is False
    assert err.value.code is None


async def test_stalled_data_times_out_as_temporary(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    smtp_server.data_delay = 5.0
    with pytest.raises(TransportError) as err:
        await send(transport, account_for(smtp_server, timeout=0.3))
    assert err.value.permanent is False
    assert "timed out" in str(err.value).lower()


async def test_mixed_recipients_are_mapped(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    smtp_server.script_rcpt = {
        "b@example.com": "450 4.2.0 mailbox busy",
        "c@example.com": "550 5.1.1 no such user",
    }
    p = payload(to=["a@example.com", "b@example.com", "c@example.com"])
    result = await send(transport, account_for(smtp_server), p)
    assert result.accepted == ["a@example.com"]
    assert result.temp_failed == {"b@example.com": (450, "4.2.0 mailbox busy")}
    assert result.perm_failed == {"c@example.com": (550, "5.1.1 no such user")}
    assert smtp_server.messages[0].rcpt_tos == ["a@example.com"]


async def test_all_recipients_refused(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    account = account_for(smtp_server)
    smtp_server.script_rcpt = {
        "a@example.com": "550 5.1.1 no such user",
        "b@example.com": "553 5.1.3 bad address",
    }
    p = payload(to=["a@example.com", "b@example.com"])
    # Every refusal is a result, not an exception: the dispatcher decides from the replies.
    result = await send(transport, account, p)
    assert result.accepted == [] and result.temp_failed == {}
    assert result.perm_failed == {
        "a@example.com": (550, "5.1.1 no such user"),
        "b@example.com": (553, "5.1.3 bad address"),
    }

    smtp_server.script_rcpt["b@example.com"] = "450 4.2.0 mailbox busy"
    result = await send(transport, account, p, mail_id="m2")
    # One refusal is temporary: a retry may still deliver to it.
    assert result.temp_failed == {"b@example.com": (450, "4.2.0 mailbox busy")}
    assert set(result.perm_failed) == {"a@example.com"}
    assert smtp_server.messages == []  # no DATA without a recipient
    assert smtp_server.connection_count == 1  # RSET kept the session usable


async def test_non_ascii_recipient_uses_smtputf8(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    p = payload(to=["Zoë <zoë@example.com>"], subject="Caffè")
    result = await send(transport, account_for(smtp_server), p)
    assert result.accepted == ["zoë@example.com"]
    [got] = smtp_server.messages
    assert got.rcpt_tos == ["zoë@example.com"]
    assert got.message["Subject"] == "Caffè"


async def test_idn_domain_goes_out_as_an_a_label_without_smtputf8(
    smtp_server: SmtpTestServer, transport: SmtpTransport
) -> None:
    async with SmtpProxy(smtp_server.port) as proxy:
        proxy.strip = {"SMTPUTF8"}  # not needed: an ASCII local part, whatever the domain
        p = payload(to=["Jörg <user@bücher.de>"], return_path="bounce@例子.广告")
        result = await send(transport, account_for(smtp_server, proxy.port), p)
    assert result.accepted == ["user@bücher.de"]  # reported as the client wrote it
    [got] = smtp_server.messages
    assert got.rcpt_tos == ["user@xn--bcher-kva.de"]
    assert got.mail_from == "bounce@xn--fsqu00a.xn--4rr70v"
    assert "SMTPUTF8" not in got.mail_options


@pytest.mark.parametrize(
    "fields",
    [
        {"to": ["用户@example.com"]},
        # only in a header: From with a separate envelope sender
        {"from": "Zoë <zoë@example.com>", "return_path": "bounce@example.com"},
    ],
    ids=["envelope", "header"],
)
async def test_utf8_local_part_without_smtputf8_is_permanent(
    smtp_server: SmtpTestServer, transport: SmtpTransport, fields: dict[str, Any]
) -> None:
    async with SmtpProxy(smtp_server.port) as proxy:
        proxy.strip = {"SMTPUTF8"}
        account = account_for(smtp_server, proxy.port)
        with pytest.raises(TransportError) as err:
            await send(transport, account, payload(**fields))
        assert err.value.permanent is True
        assert "SMTPUTF8" in str(err.value) and "non-ASCII local part" in str(err.value)
        assert smtp_server.messages == []
        # refused before anything was sent: the session carries the next message
        await send(transport, account, mail_id="m2")
    assert smtp_server.connection_count == 1


async def test_account_without_host_is_permanent(transport: SmtpTransport) -> None:
    with pytest.raises(TransportError) as err:
        await send(transport, Account(tenant_id="default", id="acc"))
    assert err.value.permanent is True
    assert "host" in str(err.value)


# -- authentication and TLS ------------------------------------------------------------------------
async def test_auth_over_starttls(
    smtp_server_factory: Callable[..., Any], rt: Runtime, transport: SmtpTransport
) -> None:
    server = await smtp_server_factory(starttls=True, auth=("user", PASSWORD), auth_required=True)
    account = account_for(server, user="user", password_enc=rt.encrypt(PASSWORD, pw_place("acc")))
    result = await send(transport, account)
    assert result.accepted == ["a@example.com"]
    [got] = server.messages
    assert got.tls is True
    assert got.authenticated_as == "user"
    assert [(a.tls, a.success) for a in server.auth_attempts] == [(True, True)]


async def test_auth_failure_is_permanent_and_the_password_never_shows(
    smtp_server_factory: Callable[..., Any],
    rt: Runtime,
    transport: SmtpTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await smtp_server_factory(starttls=True, auth=("user", "the-right-one"))
    account = account_for(server, user="user", password_enc=rt.encrypt(PASSWORD, pw_place("acc")))
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is True
    assert err.value.code == 535
    assert server.auth_attempts and server.auth_attempts[0].success is False
    for text in (str(err.value), repr(err.value.args), caplog.text):
        assert PASSWORD not in text
    assert server.messages == []


async def test_required_starttls_not_offered_fails_before_auth(
    smtp_server_factory: Callable[..., Any], rt: Runtime, transport: SmtpTransport
) -> None:
    # The server even advertises AUTH in clear text: the client must not take the bait.
    server = await smtp_server_factory(auth=("user", PASSWORD), auth_require_tls=False)
    account = account_for(
        server, user="user", password_enc=rt.encrypt(PASSWORD, pw_place("acc")), starttls=True
    )
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is True
    assert "STARTTLS" in str(err.value)
    assert server.auth_attempts == []
    assert all("AUTH" not in c.commands and "MAIL" not in c.commands for c in server.connections)
    assert server.messages == []


async def test_auth_is_not_sent_over_an_unencrypted_connection(
    smtp_server_factory: Callable[..., Any], rt: Runtime, transport: SmtpTransport
) -> None:
    # No STARTTLS, AUTH offered in clear text: the password must not leave.
    server = await smtp_server_factory(auth=("user", PASSWORD), auth_require_tls=False)
    account = account_for(server, user="user", password_enc=rt.encrypt(PASSWORD, pw_place("acc")))
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is True
    assert "not encrypted" in str(err.value) and "allow_plaintext_auth" in str(err.value)
    assert server.auth_attempts == []
    assert all("AUTH" not in c.commands and "MAIL" not in c.commands for c in server.connections)


async def test_plaintext_auth_when_the_account_allows_it(
    smtp_server_factory: Callable[..., Any], rt: Runtime, transport: SmtpTransport
) -> None:
    server = await smtp_server_factory(auth=("user", PASSWORD), auth_require_tls=False)
    account = account_for(
        server,
        user="user",
        password_enc=rt.encrypt(PASSWORD, pw_place("acc")),
        allow_plaintext_auth=True,
    )
    result = await send(transport, account)
    assert result.accepted == ["a@example.com"]
    assert [(a.tls, a.success) for a in server.auth_attempts] == [(False, True)]
    assert server.messages[0].authenticated_as == "user"


async def test_stripped_starttls_is_refused_when_the_account_requires_it(
    smtp_server_factory: Callable[..., Any], rt: Runtime, transport: SmtpTransport
) -> None:
    # A man in the middle removes STARTTLS from the EHLO reply of a server that offers it.
    server = await smtp_server_factory(starttls=True, auth=("user", PASSWORD))
    async with SmtpProxy(server.port) as proxy:
        proxy.strip = {"STARTTLS"}
        account = account_for(
            server,
            proxy.port,
            user="user",
            password_enc=rt.encrypt(PASSWORD, pw_place("acc")),
            starttls=True,
            allow_plaintext_auth=True,  # not even this lets the password out: TLS is required
        )
        with pytest.raises(TransportError) as err:
            await send(transport, account)
    assert err.value.permanent is True
    assert "STARTTLS" in str(err.value)
    assert server.auth_attempts == [] and server.messages == []
    assert all("MAIL" not in c.commands for c in server.connections)


async def test_an_account_offered_starttls_once_is_held_to_it(
    smtp_server_factory: Callable[..., Any], transport: SmtpTransport
) -> None:
    server = await smtp_server_factory(starttls=True)
    async with SmtpProxy(server.port) as proxy:
        account = account_for(server, proxy.port)  # starttls not set: used when offered
        await send(transport, account)
        assert server.messages[0].tls is True
        # the connection goes; the next one meets a man in the middle stripping STARTTLS
        proxy.drop_all()
        await server.wait_until(lambda: not server.open_connections)
        proxy.strip = {"STARTTLS"}
        with pytest.raises(TransportError) as err:
            await send(transport, account, mail_id="m2")
        assert err.value.permanent is True
        assert "offered STARTTLS before" in str(err.value)
        assert len(server.messages) == 1
        # an account that says starttls: false is not held to it (clear text accepted)
        account.starttls = False
        await send(transport, account, mail_id="m3")
    assert [m.tls for m in server.messages] == [True, False]


async def test_starttls_used_when_offered(
    smtp_server_factory: Callable[..., Any], transport: SmtpTransport
) -> None:
    server = await smtp_server_factory(starttls=True)
    await send(transport, account_for(server))
    assert server.messages[0].tls is True
    assert server.connection(1).commands[0] == "STARTTLS"


async def test_implicit_tls_with_a_private_ca(
    smtp_server_factory: Callable[..., Any], rt: Runtime, transport: SmtpTransport
) -> None:
    server = await smtp_server_factory(implicit_tls=True, auth=("user", PASSWORD))
    account = account_for(
        server, use_tls=True, user="user", password_enc=rt.encrypt(PASSWORD, pw_place("acc"))
    )
    result = await send(transport, account)
    assert result.accepted == ["a@example.com"]
    assert server.messages[0].tls is True
    assert server.messages[0].authenticated_as == "user"


async def test_implicit_tls_untrusted_certificate_is_permanent(
    smtp_server_factory: Callable[..., Any], transport: SmtpTransport, tmp_path: Path
) -> None:
    server = await smtp_server_factory(implicit_tls=True)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    for options in ({"tls_ca_file": None}, {"tls_ca_file": str(other_ca)}):
        account = account_for(server, use_tls=True, options=options)
        with pytest.raises(TransportError) as err:
            await send(transport, account)
        assert err.value.permanent is True
        assert "certificate" in str(err.value).lower()
    assert server.messages == []


async def test_starttls_untrusted_certificate_is_permanent_and_sends_no_auth(
    smtp_server_factory: Callable[..., Any], rt: Runtime, transport: SmtpTransport
) -> None:
    server = await smtp_server_factory(starttls=True, auth=("user", PASSWORD))
    account = account_for(
        server,
        user="user",
        password_enc=rt.encrypt(PASSWORD, pw_place("acc")),
        options={"tls_ca_file": None},
    )
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is True
    assert "certificate" in str(err.value).lower()
    assert server.auth_attempts == []
    await server.wait_until(lambda: bool(server.errors))  # the server saw the handshake fail


async def test_tls_verification_can_be_disabled_explicitly(
    smtp_server_factory: Callable[..., Any], transport: SmtpTransport
) -> None:
    server = await smtp_server_factory(implicit_tls=True)
    account = account_for(server, use_tls=True, options={"tls_ca_file": None, "tls_verify": False})
    result = await send(transport, account)
    assert result.accepted == ["a@example.com"]


async def test_missing_ca_file_is_permanent(
    smtp_server_factory: Callable[..., Any], transport: SmtpTransport, tmp_path: Path
) -> None:
    server = await smtp_server_factory(implicit_tls=True)
    account = account_for(
        server, use_tls=True, options={"tls_ca_file": str(tmp_path / "missing.pem")}
    )
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is True
    assert "tls_ca_file" in str(err.value)


# -- registration and the file transport -----------------------------------------------------------
def test_register_adds_smtp_and_file(rt: Runtime) -> None:
    registry: Registry[Any] = Registry("transport")
    register(registry, "ce")
    assert registry.names() == ["file", "smtp"]
    rt.transport_factories = registry
    assert isinstance(rt.transport("smtp"), SmtpTransport)
    assert isinstance(rt.transport("file"), FileTransport)
    assert rt.transport("smtp") is rt.transport("smtp")


async def test_file_transport_writes_a_parseable_eml(rt: Runtime, tmp_path: Path) -> None:
    transport = FileTransport(rt)
    outdir = tmp_path / "out"
    account = Account(
        tenant_id="default", id="files", transport="file", options={"directory": str(outdir)}
    )
    p = payload(to=["a@example.com"], bcc=["hidden@example.com"])
    content = b"\x00\x01binary\xff"
    email, sender, rcpts = build(p, "mail/../42", [Attachment("x.bin", content, None)])
    result = await transport.send(account, email, sender, rcpts)
    assert result.accepted == ["a@example.com", "hidden@example.com"]
    files = sorted(outdir.iterdir())
    assert [f.name for f in files] == ["mail_.._42.eml"]
    parsed = message_from_bytes(files[0].read_bytes(), policy=email_policy.default)
    assert parsed["X-Genro-Mail-ID"] == "mail/../42"
    assert "Bcc" not in parsed
    [att] = list(parsed.iter_attachments())  # type: ignore[attr-defined]
    assert att.get_payload(decode=True) == content
    # A retry overwrites the same file.
    await transport.send(account, email, sender, rcpts)
    assert len(list(outdir.iterdir())) == 1


async def test_file_transport_needs_a_directory(rt: Runtime) -> None:
    transport = FileTransport(rt)
    email, sender, rcpts = build(payload())
    account = Account(tenant_id="default", id="files", transport="file")
    with pytest.raises(TransportError) as err:
        await transport.send(account, email, sender, rcpts)
    assert err.value.permanent is True
    assert "directory" in str(err.value)


def pw_place(account_id: str) -> str:
    """Where the default tenant's account ``account_id`` keeps its password."""
    return account_password_context("default", account_id)
