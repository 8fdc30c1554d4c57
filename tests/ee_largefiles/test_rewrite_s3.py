"""``rewrite`` with a real S3 API (moto server through s3fs): the large file leaves the
message for the bucket, both bodies carry the storage's own presigned link, the link serves
the exact bytes to a plain HTTP client, small attachments stay attached, and a retry after a
failed SMTP attempt reuses the upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from ee_largefiles.lf import (
    MB,
    LargeFilesApp,
    attachments,
    bodies,
    fetch,
    links,
    md5_of,
)

from mail_proxy.core.testing.smtp import SmtpTestServer
from support.ce_api import message


def bucket_objects(bucket: dict[str, Any]) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(**bucket["storage_options"])
    fs.invalidate_cache()
    return [p for p in fs.find(bucket["name"]) if "/.gmp-probe-" not in p]


async def rewrite_to(lf: LargeFilesApp, bucket: dict[str, Any], **extra: Any) -> None:
    await lf.configure(
        max_size_mb=10,
        action="rewrite",
        storage_url=bucket["storage_url"],
        storage_options=bucket["storage_options"],
        **extra,
    )


async def test_a_30_mb_attachment_is_replaced_by_a_presigned_link(
    lf: LargeFilesApp, s3_bucket: dict[str, Any]
) -> None:
    await rewrite_to(lf, s3_bucket)
    big, big_md5 = lf.file("dataset.bin", 30 * MB)
    small, small_md5 = lf.file("notes.txt", 2000)
    msg = message(
        "s3-1",
        body="See the files.",
        body_html="<html><body><p>See the files.</p></body></html>",
        attachments=[
            {"filename": "dataset.bin", "storage_path": big},
            {"filename": "notes.txt", "storage_path": small},
        ],
    )
    got = await lf.deliver(msg)
    assert got is not None
    assert len(got.as_bytes()) < MB  # no 30 MB part anywhere
    kept = attachments(got)
    assert list(kept) == ["notes.txt"] and md5_of(kept["notes.txt"]) == small_md5

    texts = bodies(got)
    [url] = links(texts["plain"])
    assert links(texts["html"]) == [url]
    assert "dataset.bin (30.0 MB, until " in texts["plain"]
    assert s3_bucket["name"] in url and "/files/" not in url  # the storage signed it
    status, headers, data = await fetch(url)
    assert status == 200 and len(data) == 30 * MB and md5_of(data) == big_md5
    assert "dataset.bin" in headers.get("Content-Disposition", "")

    [stored] = bucket_objects(s3_bucket)
    assert stored.startswith(f"{s3_bucket['name']}/offloaded/default/")
    assert stored.endswith("/dataset.bin")

    events = [e for e in await lf.events("s3-1") if e["event_type"] == "attachment_offloaded"]
    assert len(events) == 1
    assert events[0]["metadata"]["size"] == 30 * MB
    assert events[0]["metadata"]["md5"] == big_md5
    detail = (await lf.api.get("/messages/s3-1"))["message"]
    [shown] = detail["offloaded_attachments"]
    assert shown["filename"] == "dataset.bin" and shown["size"] == 30 * MB
    assert await lf.metric("gmp_large_files_uploaded_total") == 1
    assert await lf.metric("gmp_large_files_bytes_total") == 30 * MB

    # the credentials are sealed wherever they are kept
    rows: list[str] = []
    async with lf.runtime.storage.database.connect() as conn:
        for table in ("tenant_settings", "largefiles_stores", "largefiles_uploads"):
            rows += [str(r) for r in (await conn.execute(sa.text(f"SELECT * FROM {table}")))]
    dump = " ".join(rows)
    assert s3_bucket["storage_url"] in dump  # the kept store and the upload are there
    assert s3_bucket["storage_options"]["secret"] not in dump
    shown_config = (await lf.api.get("/instance/large-files"))["large_file_config"]
    assert shown_config["storage_options_set"] is True and "storage_options" not in shown_config


@pytest.fixture
async def lf_db(
    db_url: str,
    aiohttp_client_factory: Any,
    make_settings: Any,
    tmp_path: Path,
    smtp: SmtpTestServer,
) -> LargeFilesApp:
    return await LargeFilesApp.start(
        aiohttp_client_factory, make_settings, tmp_path, smtp, db_url=db_url
    )


async def test_a_retry_after_a_failed_smtp_attempt_does_not_upload_again(
    lf_db: LargeFilesApp, s3_bucket: dict[str, Any]
) -> None:
    lf = lf_db
    await rewrite_to(lf, s3_bucket)
    big, big_md5 = lf.file("video.mp4", 12 * MB)
    lf.smtp.data_replies.append("451 4.3.0 try again later")
    msg = message("retry-1", attachments=[{"filename": "video.mp4", "storage_path": big}])
    got = await lf.deliver(msg)
    assert got is not None
    detail = (await lf.api.get("/messages/retry-1"))["message"]
    assert detail["attempts"] >= 1, detail
    kinds = [e["event_type"] for e in await lf.events("retry-1")]
    assert "deferred" in kinds and kinds.count("attachment_offloaded") == 1, kinds
    assert len(bucket_objects(s3_bucket)) == 1
    assert await lf.metric("gmp_large_files_uploaded_total") == 1
    [url] = links(bodies(got)["plain"])
    status, _headers, data = await fetch(url)
    assert status == 200 and md5_of(data) == big_md5
