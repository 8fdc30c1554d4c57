"""Each built-in fetch mode delivers the exact bytes to a real SMTP server, and the cache
saves the second fetch of the same MD5-marked file."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from support.api import add_account, enqueue, message, wait_status
from support.fetch_servers import FileServer
from support.smtp_server import SmtpTestServer


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
