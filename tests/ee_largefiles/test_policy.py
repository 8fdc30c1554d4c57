"""``reject`` and ``warn``, at enqueue from the sizes a message states and at send time from
the sizes learned then; and the product without the plugin."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from ee_largefiles.lf import MB, LargeFilesApp, attachments

from support.ce_api import Api, message, start_api
from support.fetch_servers import FileServer


async def test_reject_refuses_a_message_whose_attachment_is_over_the_limit(
    lf: LargeFilesApp,
) -> None:
    await lf.configure(max_size_mb=25, action="reject")
    inline = base64.b64encode(os.urandom(30 * 1024)).decode()
    answer = await lf.api.send(
        message(
            "r-1",
            attachments=[
                {
                    "filename": "big.iso",
                    "storage_path": str(lf.files / "big.iso"),
                    "size": 87_241_523,
                }
            ],
        ),
        message(
            "r-2",
            attachments=[
                {"filename": "ok.txt", "storage_path": "base64:" + inline},
                {
                    "filename": "huge.mov",
                    "storage_path": str(lf.files / "huge.mov"),
                    "size": 30 * MB,
                },
            ],
        ),
        message("r-3", attachments=[{"filename": "ok.txt", "storage_path": "base64:" + inline}]),
    )
    assert answer["queued"] == 1
    reasons = {r["id"]: r["reason"] for r in answer["rejected"]}
    assert reasons == {
        "r-1": "attachment 1: 83.2 MB is over the 25 MB limit",
        "r-2": "attachment 2: 30.0 MB is over the 25 MB limit",
    }


async def test_reject_at_send_time_when_the_size_is_only_known_then(
    lf: LargeFilesApp,
) -> None:
    await lf.configure(max_size_mb=1, action="reject")
    path, _ = lf.file("scan.tif", 2 * MB)
    server = await FileServer().start()
    server.files["photo.jpg"] = os.urandom(3 * MB)
    try:
        await lf.deliver(
            message("s-1", attachments=[{"filename": "scan.tif", "storage_path": path}]),
            status="error",
        )
        await lf.deliver(
            message(
                "s-2",
                attachments=[
                    {"filename": "a.txt", "storage_path": "base64:QUJD"},
                    {"filename": "photo.jpg", "storage_path": f"{server.url}/files/photo.jpg"},
                ],
            ),
            status="error",
        )
    finally:
        await server.stop()
    first = (await lf.api.get("/messages/s-1"))["message"]
    second = (await lf.api.get("/messages/s-2"))["message"]
    assert first["error"] == "attachment 1: 2.0 MB is over the 1 MB limit"
    assert second["error"] == "attachment 2: 3.0 MB is over the 1 MB limit"
    assert lf.smtp.messages == []


async def test_warn_accepts_with_a_warning_and_records_an_event(lf: LargeFilesApp) -> None:
    await lf.configure(max_size_mb=1, action="warn")
    content = os.urandom(MB + MB // 2)
    path, _ = lf.file("disk.bin", 2 * MB)
    answer = await lf.api.send(
        message(
            "w-1",
            attachments=[
                {
                    "filename": "inline.bin",
                    "storage_path": "base64:" + base64.b64encode(content).decode(),
                }
            ],
        ),
        message("w-2", attachments=[{"filename": "disk.bin", "storage_path": path}]),
    )
    assert answer["queued"] == 2 and answer["rejected"] == []
    assert answer["warnings"] == [
        {"id": "w-1", "warning": "attachment 1: 1.5 MB is over the 1 MB limit"}
    ]
    for msg_id in ("w-1", "w-2"):
        assert await lf.api.wait_status(msg_id, "sent", 30) == "sent"
    assert attachments(lf.received("w-1")) == {"inline.bin": content}
    assert len(attachments(lf.received("w-2"))["disk.bin"]) == 2 * MB
    for msg_id, size in (("w-1", len(content)), ("w-2", 2 * MB)):
        [event] = [e for e in await lf.events(msg_id) if e["event_type"] == "attachment_over_limit"]
        assert event["metadata"]["size"] == size and event["metadata"]["limit_mb"] == 1


async def test_rewrite_refuses_what_is_over_the_largest_offloaded_file(
    lf: LargeFilesApp, tmp_path: Path
) -> None:
    await lf.configure(max_size_mb=1, action="rewrite", storage_url=f"file://{tmp_path / 's'}")
    answer = await lf.api.send(
        message(
            "x-1",
            attachments=[
                {"filename": "a.bin", "storage_path": str(lf.files / "a"), "size": 3000 * MB}
            ],
        )
    )
    assert answer["rejected"][0]["reason"] == (
        "attachment 1: 3000.0 MB is over the largest file offloaded (2048 MB)"
    )


async def test_without_the_plugin_the_setting_names_it(
    aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    api: Api = await start_api(
        aiohttp_client_factory,
        make_settings,
        f"sqlite:///{tmp_path / 'plain.db'}",
        tmp_path,
        disabled_plugins=["large_files"],
    )
    body = {"max_size_mb": 10, "action": "warn"}
    answer = await api.call("PUT", "/tenant-settings/large_file_config", body, expect=400)
    assert answer["code"] == "plugin_not_installed"
    assert answer["error"].startswith("large_file_config needs the large-files plugin")
    assert (await api.call("GET", "/instance/large-files", expect=404))["_status"] == 404
    await api.add_account()
    sized = message(
        "p-1", attachments=[{"filename": "a", "storage_path": "base64:QUJD", "size": 3}]
    )
    assert (await api.send(sized))["queued"] == 1
