"""Each built-in fetch mode delivers the exact bytes to a real SMTP server, and the cache
saves the second fetch of the same MD5-marked file."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mail_proxy.ce.storage import schema as t
from mail_proxy.core.testing.smtp import SmtpTestServer
from mail_proxy.core.web.app import RUNTIME
from support.api import add_account, enqueue, message, wait_status
from support.fetch_servers import FileServer


def received_parts(smtp: SmtpTestServer, mail_id: str) -> dict[str, bytes]:
    [msg] = [m for m in smtp.messages if m.message["X-Genro-Mail-ID"] == mail_id]
    return {
        part.get_filename(): part.get_payload(decode=True)
        for part in msg.message.iter_attachments()
    }


async def test_every_builtin_mode_delivers_exact_bytes(
    aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    blobs = {
        name: os.urandom(size)
        for name, size in [
            ("inline.bin", 3000),
            ("disk.pdf", 200_000),
            ("ep.dat", 50_000),
            ("url.png", 70_000),
        ]
    }
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "disk.pdf").write_bytes(blobs["disk.pdf"])
    files = await FileServer().start()
    files.files.update({"doc_id=7": blobs["ep.dat"], "url.png": blobs["url.png"]})
    try:
        async with SmtpTestServer() as smtp:
            client = await aiohttp_client_factory(
                make_settings(
                    attachment_base_dirs=[str(tmp_path / "files")],
                    attachment_base_url=files.url,
                    fetch_allow_networks=["127.0.0.0/8"],
                )
            )
            await add_account(client, smtp, default=True)
            atts = [
                {
                    "filename": "inline.bin",
                    "storage_path": "base64:" + base64.b64encode(blobs["inline.bin"]).decode(),
                },
                {"filename": "disk.pdf", "storage_path": str(tmp_path / "files" / "disk.pdf")},
                {"filename": "ep.dat", "storage_path": "doc_id=7"},
                {"filename": "url.png", "storage_path": f"{files.url}/files/url.png"},
            ]
            result = await enqueue(client, [message(id="att", attachments=atts)])
            assert result["queued"] == 1, result
            await wait_status(client, "att", "sent")
            got = received_parts(smtp, "att")
            assert {k: hashlib.sha256(v).hexdigest() for k, v in got.items()} == {
                k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()
            }
    finally:
        await files.stop()


async def test_md5_marker_avoids_a_second_fetch(
    aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    content = os.urandom(40_000)
    md5 = hashlib.md5(content).hexdigest()
    files = await FileServer().start()
    files.files["doc"] = content
    try:
        async with SmtpTestServer() as smtp:
            client = await aiohttp_client_factory(
                make_settings(attachment_base_url=files.url, cache_disk_dir=str(tmp_path / "cache"))
            )
            await add_account(client, smtp, default=True)
            att = {"filename": f"report_{{MD5:{md5}}}.pdf", "storage_path": "doc"}
            await enqueue(client, [message(id="c1", attachments=[att])])
            await wait_status(client, "c1", "sent")
            await enqueue(client, [message(id="c2", attachments=[att])])
            await wait_status(client, "c2", "sent")
            assert files.count("/mail-proxy/attachments") == 1
            assert received_parts(smtp, "c2") == {"report.pdf": content}
    finally:
        await files.stop()


async def test_unknown_fetch_mode_and_bad_paths_are_rejected_at_enqueue(
    aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    client = await aiohttp_client_factory(make_settings(attachment_base_dirs=[str(tmp_path)]))
    await add_account(client, None, default=True)
    result = await enqueue(
        client,
        [
            message(
                id="u1", attachments=[{"filename": "a", "storage_path": "x", "fetch_mode": "nope"}]
            ),
            message(
                id="u2",
                attachments=[
                    {"filename": "a", "storage_path": "../etc/passwd", "fetch_mode": "filesystem"}
                ],
            ),
            message(
                id="u3",
                attachments=[{"filename": "a\r\nBcc: x@y.z", "storage_path": "base64:AAAA"}],
            ),
        ],
    )
    assert result["queued"] == 0
    reasons = {r["id"]: r["reason"] for r in result["rejected"]}
    assert "fetch_mode" in reasons["u1"] and "nope" in reasons["u1"]
    assert reasons["u2"].startswith("attachment 1:")
    assert reasons["u3"].startswith("attachment 1:")


async def test_attachment_credentials_are_used_but_never_stored_in_clear(
    aiohttp_client_factory: Any, make_settings: Any
) -> None:
    blob = os.urandom(20_000)
    token = "att-token-5f1c9e"
    files = await FileServer().start()
    files.files["private.bin"] = blob
    files.required_auth = f"Bearer {token}"  # 401 without exactly these credentials
    try:
        async with SmtpTestServer() as smtp:
            client = await aiohttp_client_factory(
                make_settings(fetch_allow_networks=["127.0.0.0/8"], scheduler_active=False)
            )
            await add_account(client, smtp, default=True)
            att = {
                "filename": "private.bin",
                "storage_path": f"{files.url}/files/private.bin",
                "auth": {"method": "bearer", "token": token},
            }
            result = await enqueue(client, [message(id="sealed", attachments=[att])])
            assert result["queued"] == 1, result
            rt = client.app[RUNTIME]
            async with rt.storage.engine.connect() as conn:
                stored = await conn.scalar(sa.select(sa.cast(t.messages.c.payload, sa.Text)))
            assert token not in stored and '"auth_enc"' in stored
            resp = await client.post("/commands/activate", json={}, headers=client.admin_headers)
            assert resp.status == 200
            await wait_status(client, "sealed", "sent")
            assert received_parts(smtp, "sealed") == {"private.bin": blob}
            assert files.count("/files/private.bin") == 1
    finally:
        await files.stop()


async def test_attachment_credentials_without_an_encryption_key_are_refused(
    aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    key_dir = tmp_path / "no-key"
    key_dir.mkdir()
    client = await aiohttp_client_factory(
        make_settings(encryption_key=None, instance_dir=str(key_dir))
    )
    if client.app[RUNTIME].cipher is not None:  # a key from /run/secrets on this machine
        pytest.skip("an encryption key is configured outside the test")
    account = {"id": "main", "host": "127.0.0.1", "port": 2525, "default": True}
    resp = await client.post("/account", json=account, headers=client.admin_headers)
    assert resp.status == 200, await resp.text()
    att = {
        "filename": "a.pdf",
        "storage_path": "https://files.example.com/a.pdf",
        "auth": {"method": "basic", "user": "u", "password": "pw-in-clear"},
    }
    result = await enqueue(client, [message(id="nokey", attachments=[att])])
    assert result["queued"] == 0
    [rejected] = result["rejected"]
    assert rejected["id"] == "nokey"
    assert rejected["reason"] == (
        "attachment 1: auth needs an encryption key on the server (MAIL_PROXY_ENCRYPTION_KEY)"
    )
