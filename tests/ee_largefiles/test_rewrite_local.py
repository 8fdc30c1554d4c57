"""``rewrite`` with ``file://`` storage: the proxy serves the files itself through
``GET /files/{token}`` (real HTTP to the running app): exact bytes, the original name,
``Range``; a tampered token, an expired one and one for a deleted file all get the same 404.
Sizes learned only while fetching (``http_url``) are handled too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ee_largefiles.lf import (
    MB,
    LargeFilesApp,
    attachments,
    bodies,
    fetch,
    links,
    md5_of,
)

from support.ce_api import message
from support.fetch_servers import FileServer


async def local_rewrite(lf: LargeFilesApp, store: Path, **extra: object) -> None:
    await lf.configure(
        max_size_mb=1,
        action="rewrite",
        storage_url=f"file://{store}",
        public_base_url=lf.url,
        **extra,
    )


def stored_files(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file()] if store.exists() else []


async def test_the_proxy_serves_the_file_with_its_name_and_ranges(
    lf: LargeFilesApp, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    await local_rewrite(lf, store)
    path, digest = lf.file("report.pdf", 5 * MB)
    msg = message(
        "local-1",
        body="Quarterly report",
        body_html="<p>Quarterly report</p>",
        attachments=[{"filename": "report.pdf", "storage_path": path}],
    )
    got = await lf.deliver(msg)
    assert got is not None and attachments(got) == {}
    texts = bodies(got)
    [url] = links(texts["plain"])
    assert links(texts["html"]) == [url] and url.startswith(lf.url + "/files/")
    [on_disk] = stored_files(store)
    assert on_disk.name == "report.pdf" and on_disk.stat().st_size == 5 * MB

    status, headers, data = await fetch(url)
    assert status == 200 and md5_of(data) == digest
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')
    assert headers["Accept-Ranges"] == "bytes"

    status, headers, part = await fetch(url, {"Range": "bytes=100-1048675"})
    assert status == 206 and part == data[100:1048676]
    assert headers["Content-Range"] == f"bytes 100-1048675/{5 * MB}"
    status, _h, tail = await fetch(url, {"Range": "bytes=-10"})
    assert status == 206 and tail == data[-10:]
    status, _h, _b = await fetch(url, {"Range": f"bytes={5 * MB}-"})
    assert status == 416
    assert await lf.metric("gmp_large_files_downloads_total") == 3

    # anything but the exact token: the same 404
    file_id, expiry, signature = url.rsplit("/", 1)[1].split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    forged = [
        f"{file_id}.{expiry}.{flipped}",
        f"{file_id}.{int(expiry) + 86400}.{signature}",
        f"{'0' * 32}.{expiry}.{signature}",
        "not-a-token",
        f"{file_id}.{expiry}",
    ]
    answers = []
    for token in forged:
        status, _h, body = await fetch(f"{lf.url}/files/{token}")
        answers.append((status, body))
    assert {a for a in answers} == {(404, answers[0][1])}, answers
    assert b"file_not_found" in answers[0][1]

    # deleted (purged): the old link is refused the same way, the file is gone
    purged = await lf.api.post("/large-files/purge", {})
    assert purged["deleted"] == 1
    assert stored_files(store) == []
    assert (await fetch(url))[0] == 404


async def test_an_expired_link_is_refused(lf: LargeFilesApp, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ttl = 4.0
    await local_rewrite(lf, store, file_ttl_days=ttl / 86400)
    path, digest = lf.file("short.bin", 2 * MB)
    got = await lf.deliver(
        message("exp-1", attachments=[{"filename": "short.bin", "storage_path": path}])
    )
    assert got is not None
    [url] = links(bodies(got)["plain"])
    expires = int(url.rsplit("/", 1)[1].split(".")[1])
    if time.time() < expires - 0.5:  # (a slow machine may already be past it)
        status, _h, data = await fetch(url)
        assert status == 200 and md5_of(data) == digest
    await asyncio.sleep(max(0.0, expires - time.time()) + 1.0)
    status, _h, body = await fetch(url)
    assert status == 404 and b"file_not_found" in body


async def test_the_link_goes_into_the_only_body_and_names_are_escaped(
    lf: LargeFilesApp, tmp_path: Path
) -> None:
    await local_rewrite(lf, tmp_path / "store")
    path, _digest = lf.file("big.bin", 2 * MB)
    name = 'Q3 <b>report</b> & "notes".bin'
    att = [{"filename": name, "storage_path": path}]
    text_only = await lf.deliver(message("t-only", body="plain words", attachments=att))
    html_only = await lf.deliver(
        message("h-only", body="<p>html words</p>", content_type="html", attachments=att)
    )
    assert text_only is not None and html_only is not None
    plain = bodies(text_only)
    assert list(plain) == ["plain"] and name in plain["plain"] and len(links(plain["plain"])) == 1
    html = bodies(html_only)
    assert list(html) == ["html"]
    assert "<b>report</b>" not in html["html"]
    assert "Q3 &lt;b&gt;report&lt;/b&gt; &amp; &quot;notes&quot;.bin" in html["html"]
    [url] = links(html["html"])
    status, headers, _data = await fetch(url)
    assert status == 200 and "filename*=UTF-8''Q3%20%3Cb%3Ereport" in headers["Content-Disposition"]


async def test_sizes_learned_while_fetching_over_http(lf: LargeFilesApp, tmp_path: Path) -> None:
    import os

    server = await FileServer().start()
    try:
        big, small = os.urandom(3 * MB), os.urandom(40_000)
        server.files.update({"big.bin": big, "small.bin": small})
        await local_rewrite(lf, tmp_path / "store")
        msg = message(
            "http-1",
            attachments=[
                {"filename": "big.bin", "storage_path": f"{server.url}/files/big.bin"},
                {"filename": "small.bin", "storage_path": f"{server.url}/files/small.bin"},
            ],
        )
        got = await lf.deliver(msg)
    finally:
        await server.stop()
    assert got is not None
    assert attachments(got) == {"small.bin": small}
    [url] = links(bodies(got)["plain"])
    status, _h, data = await fetch(url)
    assert status == 200 and data == big
