"""Cleanup: the service deletes expired files from the storage and their records (on SQLite
and PostgreSQL), ``purge`` does it on demand, instances sweeping one database together
delete each file once, and deleting a tenant deletes its files (with the credentials kept
when they were written: the tenant's settings are gone by then)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from ee_largefiles.lf import MB, LargeFilesApp
from ee_largefiles.test_rewrite_s3 import bucket_objects

from mail_proxy.core.testing.smtp import SmtpTestServer
from mail_proxy.ee.largefiles.cleanup import purge
from support.ce_api import message
from support.multitenancy import add_file_account, as_tenant, create_tenant


def files_in(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file()] if store.exists() else []


async def offload(lf: LargeFilesApp, msg_id: str, size: int = 2 * MB) -> None:
    path, _ = lf.file(f"{msg_id}.bin", size)
    await lf.deliver(message(msg_id, attachments=[{"filename": "f.bin", "storage_path": path}]))


@pytest.fixture
async def lf_db(
    db_url: str,
    aiohttp_client_factory: Any,
    make_settings: Any,
    tmp_path: Path,
    smtp: SmtpTestServer,
) -> LargeFilesApp:
    return await LargeFilesApp.start(
        aiohttp_client_factory,
        make_settings,
        tmp_path,
        smtp,
        db_url=db_url,
        large_files_cleanup_interval=0.3,
    )


async def test_the_service_deletes_expired_files_and_their_records(
    lf_db: LargeFilesApp, tmp_path: Path
) -> None:
    lf = lf_db
    store = tmp_path / "store"
    ttl = 3.0
    await lf.configure(
        max_size_mb=1, action="rewrite", storage_url=f"file://{store}", file_ttl_days=ttl / 86400
    )
    await offload(lf, "c-1")
    await offload(lf, "c-2")
    listed = (await lf.api.get("/large-files"))["files"]
    assert [f["message_id"] for f in listed] == ["c-1", "c-2"]
    assert all(f["state"] == "stored" and f["size"] == 2 * MB for f in listed)
    deadline = time.monotonic() + ttl + 15
    while files_in(store) or (await lf.api.get("/large-files"))["files"]:
        assert time.monotonic() < deadline, (files_in(store), listed)
        await asyncio.sleep(0.2)
    assert await lf.metric("gmp_large_files_expired_total") == 2


async def test_purge_expired_only_or_everything(lf: LargeFilesApp, tmp_path: Path) -> None:
    store = tmp_path / "store"
    await lf.configure(max_size_mb=1, action="rewrite", storage_url=f"file://{store}")
    await offload(lf, "p-1")
    assert (await lf.api.get("/large-files", params={"expired": "true"}))["files"] == []
    assert await lf.api.post("/large-files/purge", {"expired": True}) == {
        "ok": True,
        "deleted": 0,
        "failed": 0,
        "_status": 200,
    }
    assert len(files_in(store)) == 1
    done = await lf.api.post("/large-files/purge", {})
    assert (done["deleted"], done["failed"]) == (1, 0)
    assert files_in(store) == [] and (await lf.api.get("/large-files"))["files"] == []
    # a second purge has nothing left to do (and fails on nothing)
    again = await lf.api.post("/large-files/purge", {})
    assert (again["deleted"], again["failed"]) == (0, 0)


async def test_instances_sweeping_together_delete_each_file_once(
    pg_url: str,
    aiohttp_client_factory: Any,
    make_settings: Any,
    tmp_path: Path,
    smtp: SmtpTestServer,
) -> None:
    one = await LargeFilesApp.start(
        aiohttp_client_factory, make_settings, tmp_path / "one", smtp, db_url=pg_url
    )
    (tmp_path / "two").mkdir()
    # the second instance only sweeps: with its dispatcher running it could claim one of the
    # messages and fail it (it has no attachment base directory for the files)
    two_client = await aiohttp_client_factory(
        make_settings(
            database_url=pg_url,
            instance_dir=str(tmp_path / "two"),
            encryption_key=one.runtime.settings.encryption_key,
            scheduler_active=False,
        )
    )
    from mail_proxy.core.web.app import RUNTIME

    two = two_client.app[RUNTIME]
    store = tmp_path / "store"
    await one.configure(
        max_size_mb=1, action="rewrite", storage_url=f"file://{store}", file_ttl_days=2 / 86400
    )
    for n in range(6):
        await offload(one, f"m-{n}", size=MB + 1000)
    await asyncio.sleep(2.5)
    results = await asyncio.gather(purge(one.runtime), purge(two), purge(one.runtime))
    assert sum(r["deleted"] for r in results) == 6, results
    assert all(r["failed"] == 0 for r in results)
    assert files_in(store) == []


async def test_deleting_a_tenant_deletes_its_files(
    lf: LargeFilesApp, s3_bucket: dict[str, Any], tmp_path: Path
) -> None:
    if "multitenancy" not in lf.runtime.plugins.names():
        pytest.skip("the multitenancy plugin is not installed")
    acme = await create_tenant(lf.api, "acme")
    other = await create_tenant(lf.api, "other")
    config = {
        "max_size_mb": 1,
        "action": "rewrite",
        "storage_url": s3_bucket["storage_url"],
        "storage_options": s3_bucket["storage_options"],
    }
    for tenant in ("acme", "other"):
        await lf.api.call("PUT", "/tenant/" + tenant, {"large_file_config": config})
    out = str(tmp_path / "eml")
    for handle in (acme, other):
        await add_file_account(lf.api, handle, "main", out)
        path, _ = lf.file(f"{handle.id}.bin", 2 * MB)
        att = [{"filename": "f.bin", "storage_path": path}]
        sent = await as_tenant(
            lf.api,
            handle,
            "POST",
            "/commands/add-messages",
            {"messages": [message("t-1", attachments=att)]},
        )
        assert sent["queued"] == 1
    deadline = time.monotonic() + 30
    while len(bucket_objects(s3_bucket)) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    await lf.api.call("DELETE", "/tenant/acme")
    left = bucket_objects(s3_bucket)
    assert len(left) == 1 and "/other/" in left[0], left
    files = (await lf.api.get("/large-files"))["files"]
    assert [f["tenant_id"] for f in files] == ["other"]
