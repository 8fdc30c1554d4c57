"""Smaller limits of issue 16 (defect 8): recipients per message, the admin token's length,
and the proxy's own address as an attachment URL."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mail_proxy.ce.fetch.netpolicy import AddressPolicy, AddressRefused
from mail_proxy.core.contracts.errors import ConfigError
from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.service import ServiceProcess, free_port
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.ce_api import Api, message, start_api
from support.cli_runner import MAIL_PROXY, clean_env
from support.fetch_servers import FileServer


# -- recipients per message --------------------------------------------------------------------
@pytest.fixture
async def api(db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path) -> Api:
    api = await start_api(aiohttp_client_factory, make_settings, db_url, tmp_path, max_recipients=5)
    await api.add_account("main")
    return api


async def test_recipients_per_message_are_capped(api: Api) -> None:
    answer = await api.send(
        message(
            "five",
            to=["a@example.com", "b@example.com"],
            cc="c@example.com, d@example.com",
            bcc=["e@example.com"],
        ),
        message("six", to="a@x.com, b@x.com, c@x.com", cc=["d@x.com"], bcc=["e@x.com", "f@x.com"]),
        message("many", to=[f"r{i}@example.com" for i in range(10_000)]),
    )
    assert answer["queued"] == 1
    assert answer["rejected"] == [
        {
            "id": "six",
            "reason": "too many recipients: 6 (to + cc + bcc); the limit is 5",
            "index": 1,
        },
        {
            "id": "many",
            "reason": "too many recipients: 10000 (to + cc + bcc); the limit is 5",
            "index": 2,
        },
    ]
    assert await api.message_ids() == ["five"]


def test_max_recipients_default_and_variable(make_settings: Any) -> None:
    from mail_proxy.core.contracts.config import load_settings

    assert load_settings(env={}).max_recipients == 1000
    assert load_settings(env={"GMP_MAX_RECIPIENTS": "50"}).max_recipients == 50
    with pytest.raises(ConfigError, match="GMP_MAX_RECIPIENTS"):
        load_settings(env={"GMP_MAX_RECIPIENTS": "0"})


# -- the admin token's length ------------------------------------------------------------------
async def test_an_admin_token_shorter_than_16_characters_refuses_the_app(
    make_settings: Any,
) -> None:
    from mail_proxy.core.web.app import create_app

    with pytest.raises(ConfigError, match="GMP_API_TOKEN: the admin token has 15 characters"):
        create_app(make_settings(api_token="x" * 15))
    assert create_app(make_settings(api_token="x" * 16)) is not None


def test_serve_refuses_to_start_with_a_short_admin_token(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        GMP_API_TOKEN="short-token",
        GMP_PORT=str(free_port()),
        GMP_DB_PATH=str(tmp_path / "x.db"),
    )
    proc = subprocess.run(
        [MAIL_PROXY, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "GMP_API_TOKEN" in line]
    assert len(errors) == 1 and "at least 16" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "short-token" not in proc.stderr


# -- the proxy's own address is never an attachment URL ---------------------------------------
async def test_the_proxy_never_fetches_from_its_own_address(tmp_path: Path) -> None:
    """A real ``mail-proxy serve`` with loopback allowed for fetches: a message naming the
    proxy's own port is refused at enqueue (literal address) or fails at send time (a host
    name resolved then); another loopback server is still fetched."""
    async with SmtpTestServer() as smtp:
        files = await FileServer().start()
        files.files["a.txt"] = b"attachment"
        env = {
            "GMP_DATABASE_URL": f"sqlite:///{tmp_path / 'own.db'}",
            "GMP_API_TOKEN": "own-address-token-0123",
            "MAIL_PROXY_ENCRYPTION_KEY": generate_key(),
            "GMP_FETCH_ALLOW_NETWORKS": "127.0.0.0/8,::1/128",
            "GMP_SEND_LOOP_INTERVAL": "0.05",
            "GMP_LOG_LEVEL": "WARNING",
        }
        svc = await ServiceProcess(env, tmp_path / "svc.log").start()
        try:
            account = {"id": "a", "host": "127.0.0.1", "port": smtp.port, "default": True}
            await svc.call("POST", "/account", json=account)

            def entry(msg_id: str, url: str) -> dict[str, Any]:
                att = {"filename": "a.txt", "storage_path": url, "fetch_mode": "http_url"}
                return message(msg_id, attachments=[att])

            own = f"http://127.0.0.1:{svc.port}/health"
            body = {
                "messages": [
                    entry("literal", own),
                    entry("by-name", f"http://localhost:{svc.port}/health"),
                    entry("elsewhere", f"{files.url}/files/a.txt"),
                ]
            }
            answer = await svc.call("POST", "/commands/add-messages", json=body)
            assert answer["queued"] == 2
            [refused] = answer["rejected"]
            assert refused["id"] == "literal"
            assert refused["reason"] == (
                f"attachment 1: refused by the address policy: 127.0.0.1:{svc.port} is this "
                "proxy's own listening address (never fetched, whatever "
                "GMP_FETCH_ALLOW_NETWORKS allows)"
            )
            by_name = await _wait_finished(svc, "by-name")
            assert by_name["status"] == "error" and by_name["attempts"] == 1
            assert "is this proxy's own listening address" in by_name["error"]
            assert f"'localhost' (127.0.0.1) port {svc.port}" in by_name["error"]
            assert (await _wait_finished(svc, "elsewhere"))["status"] == "sent"
            assert [m.message["X-Genro-Mail-ID"] for m in smtp.messages] == ["elsewhere"]
            assert files.count("/files/a.txt") == 1
        finally:
            svc.stop()
            await files.stop()


def _outbound_address() -> str | None:
    """An address of this machine other than loopback (the route to a test network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP: no packet is sent
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "localhost", "127.0.0.1"])
def test_own_endpoint_matching(listen: str) -> None:
    port = 8123
    policy = AddressPolicy(["0.0.0.0/0", "::/0"], own=[(listen, port)])
    refused = [f"http://127.0.0.1:{port}/", f"http://[::ffff:127.0.0.1]:{port}/"]
    refused += [f"http://0.0.0.0:{port}/"]
    allowed = [f"http://127.0.0.1:{port + 1}/", f"http://198.51.100.7:{port}/"]
    wildcard = listen in ("0.0.0.0", "::")
    local = _outbound_address()
    if wildcard:
        refused.append(f"http://127.0.0.9:{port}/")  # all of 127/8 is this machine
        if local:
            refused.append(f"http://{local}:{port}/")
    else:
        allowed.append(f"http://127.0.0.9:{port}/")  # not where this listener is
    for url in refused:
        with pytest.raises(AddressRefused, match="this proxy's own listening address"):
            policy.check_url(url)
    for url in allowed:
        policy.check_url(url)


async def _wait_finished(svc: ServiceProcess, msg_id: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{svc.url}/messages/{msg_id}", headers=svc.headers) as resp:
                msg = (await resp.json())["message"]
            if msg["status"] in ("sent", "error") or time.monotonic() > deadline:
                return msg
            await asyncio.sleep(0.05)
