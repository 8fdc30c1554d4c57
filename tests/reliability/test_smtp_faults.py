"""F8: the real service delivering through a fault proxy (tests/support/smtp_proxy.py) in front
of the SMTP server.

- **STARTTLS stripped** by a man in the middle, the server even offering AUTH in clear:
  an account that requires STARTTLS, one that leaves it to the server, and one that used TLS
  before all fail at once with a clear reason; no AUTH command and no password ever crosses
  the wire in clear (checked on the bytes the proxy passed on), nothing is retried.
- **Certificates**: a server with a self-signed certificate is refused (no AUTH, nothing
  sent); a server whose certificate comes from a private CA (``trustme``) is accepted once
  that CA is the account's ``tls_ca_file``: the message goes over TLS, authenticated.
- **Reset, cut, stall**: one message meets a connection reset at its first command, a reset
  and a clean cut in the middle of its content, then a stall there; each becomes a deferred
  retry with its reason, the fifth connection delivers it, exactly once, and the service goes
  on (no crash, no traceback in its log).

The SMTP transport's own tests (tests/ce/test_smtp_transport.py) check the same refusals one
connection at a time; here they are checked end to end, from the API to the wire.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
from reliability.harness import Fleet, Sink, add_account, message, planted, record, wait_final

from mail_proxy.core.testing.service import ServiceProcess
from support.smtp_proxy import Fault, SmtpProxy

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(180)]

USER = "battery"


def fleet_env() -> dict[str, str]:
    return {"GMP_RETRY_DELAYS": "0.3", "GMP_RETRY_JITTER": "0", "GMP_MAX_RETRIES": "8"}


def wire_forms(secret: str) -> list[bytes]:
    """How a password can appear on the wire: as is, or base64 (AUTH PLAIN and LOGIN)."""
    plain = base64.b64encode(f"\0{USER}\0{secret}".encode())
    return [secret.encode(), base64.b64encode(secret.encode()), plain]


async def post_account(svc: ServiceProcess, port: int, **fields: Any) -> None:
    await svc.call("POST", "/account", json={"host": "127.0.0.1", "port": port, **fields})


async def send_one(svc: ServiceProcess, msg_id: str, account_id: str) -> None:
    data = await svc.call(
        "POST",
        "/commands/add-messages",
        json={"messages": [message(msg_id, account_id=account_id)]},
    )
    assert data["queued"] == 1, data


async def detail(svc: ServiceProcess, msg_id: str) -> dict[str, Any]:
    return (await svc.call("GET", f"/messages/{msg_id}"))["message"]  # type: ignore[no-any-return]


async def outcome_events(svc: ServiceProcess, msg_id: str) -> list[dict[str, Any]]:
    events = (await svc.call("GET", f"/messages/{msg_id}/events"))["events"]
    return [e for e in events if e["event_type"] in ("sent", "error", "deferred")]


def self_signed_context(tmp_path: Path, host: str = "127.0.0.1") -> ssl.SSLContext:
    """A server context presenting a certificate for ``host`` that signs itself (no CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "self-signed.pem", tmp_path / "self-signed.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


async def test_f8_stripped_starttls_never_lets_auth_out_in_clear(tmp_path: Path) -> None:
    password = planted("smtppw")
    # the server offers STARTTLS and, to a client that does not start it, AUTH in clear
    async with Sink(starttls=True, auth=(USER, password), auth_require_tls=False) as sink:
        async with SmtpProxy(sink.port) as proxy:
            async with Fleet(tmp_path, f"sqlite:///{tmp_path / 'f8.db'}", **fleet_env()) as fleet:
                svc = await fleet.start()
                common = {"user": USER, "password": password, "max_connections": 1}
                trust = {"options": {"tls_ca_file": sink.ca_file}}
                await post_account(svc, proxy.port, id="required", starttls=True, **common)
                await post_account(svc, proxy.port, id="when-offered", **common, **trust)
                await post_account(svc, proxy.port, id="used-tls", **common, **trust)
                # "used-tls" meets the real server first: STARTTLS, then AUTH, encrypted
                await send_one(svc, "f8-tls-first", "used-tls")
                await wait_final(svc, 1, timeout=30)
                assert [(m.tls, m.authenticated_as) for m in sink.messages] == [(True, USER)]
                proxy.drop_all()  # its pooled connection goes; the next one is stripped
                await sink.wait_until(lambda: not sink.open_connections, timeout=10)
                clear_from = len(proxy.client_chunks)
                proxy.strip = {"STARTTLS"}
                attempts_before = len(sink.auth_attempts)
                for msg_id, account in (
                    ("f8-required", "required"),
                    ("f8-when-offered", "when-offered"),
                    ("f8-used-tls", "used-tls"),
                ):
                    await send_one(svc, msg_id, account)
                await wait_final(svc, 4, timeout=30)
                reasons = {}
                for msg_id in ("f8-required", "f8-when-offered", "f8-used-tls"):
                    got = await detail(svc, msg_id)
                    assert got["status"] == "error", got
                    events = await outcome_events(svc, msg_id)
                    # permanent at once: one outcome, no retry
                    assert [e["event_type"] for e in events] == ["error"], events
                    reasons[msg_id] = got["error"]
                wire = b"".join(b"".join(c) for c in proxy.client_chunks[clear_from:])
    assert "STARTTLS" in reasons["f8-required"]
    assert "allow_plaintext_auth" in reasons["f8-when-offered"]
    assert "offered STARTTLS before" in reasons["f8-used-tls"]
    assert wire and b"AUTH" not in wire.upper()
    assert not [form for form in wire_forms(password) if form in wire]
    assert len(sink.auth_attempts) == attempts_before and len(sink.messages) == 1
    assert password not in fleet.logs()
    record("F8 stripped STARTTLS", refused=len(reasons), auth_in_clear=0, delivered_in_clear=0)


async def test_f8_self_signed_refused_private_ca_accepted(tmp_path: Path) -> None:
    password = planted("smtppw")
    context = self_signed_context(tmp_path)
    async with (
        Sink(starttls=True, auth=(USER, password), tls_context=context) as self_signed,
        Sink(starttls=True, auth=(USER, password)) as private_ca,  # a trustme CA of its own
    ):
        assert self_signed.ca_file is None and private_ca.ca_file is not None
        async with Fleet(tmp_path, f"sqlite:///{tmp_path / 'f8.db'}", **fleet_env()) as fleet:
            svc = await fleet.start()
            common = {"user": USER, "password": password, "starttls": True}
            await post_account(svc, self_signed.port, id="self-signed", **common)
            await post_account(
                svc,
                private_ca.port,
                id="private-ca",
                options={"tls_ca_file": private_ca.ca_file},
                **common,
            )
            # the private CA's server, without its CA configured: refused as well
            await post_account(svc, private_ca.port, id="ca-unknown", **common)
            for msg_id, account in (
                ("f8-self-signed", "self-signed"),
                ("f8-private-ca", "private-ca"),
                ("f8-ca-unknown", "ca-unknown"),
            ):
                await send_one(svc, msg_id, account)
            await wait_final(svc, 3, timeout=30)
            refused = {m: await detail(svc, m) for m in ("f8-self-signed", "f8-ca-unknown")}
            accepted = await detail(svc, "f8-private-ca")
            assert password not in fleet.logs()
    for got in refused.values():
        assert got["status"] == "error" and "certificate" in got["error"].lower(), got
    assert self_signed.auth_attempts == [] and self_signed.messages == []
    assert self_signed.errors  # the handshake was refused by the client
    assert accepted["status"] == "sent", accepted
    [delivered] = private_ca.messages
    assert delivered.tls and delivered.authenticated_as == USER
    assert str(delivered.message["X-Genro-Mail-ID"]) == "f8-private-ca"
    assert [(a.tls, a.success) for a in private_ca.auth_attempts] == [(True, True)]
    record("F8 certificates", self_signed_refused=1, unknown_ca_refused=1, private_ca_sent=1)


async def test_f8_reset_cut_and_stall_become_deferred_retries(tmp_path: Path) -> None:
    faults = [
        Fault("reset"),  # at the client's first command (EHLO)
        Fault("reset", after=300),  # in the middle of the content
        Fault("cut", after=300),
        Fault("stall", after=300),
    ]
    async with Sink() as sink, SmtpProxy(sink.port) as proxy:
        proxy.faults.extend(faults)
        async with Fleet(tmp_path, f"sqlite:///{tmp_path / 'f8.db'}", **fleet_env()) as fleet:
            svc = await fleet.start()
            # one connection at a time, each reply within 2 s (the stall's timeout)
            await add_account(svc, sink, port=proxy.port, max_connections=1, timeout=2.0)
            await send_one(svc, "f8-faults", "battery")
            await wait_final(svc, 1, timeout=60)
            got = await detail(svc, "f8-faults")
            events = await outcome_events(svc, "f8-faults")
            health = await svc.call("GET", "/health")
            log = fleet.logs()
    assert proxy.struck == faults  # every fault met a connection of the message
    # the faults in the middle of the content struck after DATA had begun
    assert all(b"DATA\r\n" in b"".join(chunks)[:300] for chunks in proxy.client_chunks[1:4])
    assert got["status"] == "sent", got
    kinds = [e["event_type"] for e in events]
    assert kinds == ["deferred"] * len(faults) + ["sent"], events
    assert all(e["description"] for e in events[:-1])  # each retry says why
    assert sink.copies() == {"f8-faults": 1}  # delivered once: never half a message
    assert health and "Traceback" not in log and "unexpected error" not in log
    record(
        "F8 reset/cut/stall",
        faults=len(faults),
        deferred=kinds.count("deferred"),
        delivered=sum(sink.copies().values()),
        reasons=[e["description"][:90] for e in events[:-1]],
    )
