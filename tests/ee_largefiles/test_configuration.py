"""``large_file_config``: a storage that cannot be used is refused when the configuration is
stored (by every route that stores it), credentials are sealed and never shown, the storage
check route writes, reads and deletes a probe object."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from ee_largefiles.lf import LargeFilesApp

from support.multitenancy import create_tenant

MISSING_DRIVER = importlib.util.find_spec("gcsfs") is None


async def test_a_bad_storage_url_is_refused_at_configuration_time(
    lf: LargeFilesApp, s3_bucket: dict[str, Any], tmp_path: Path
) -> None:
    options = s3_bucket["storage_options"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"storage_url": "nosuch://bucket/x"}, "unknown storage protocol 'nosuch'"),
        ({"storage_url": "https://example.com/x"}, "https:// storage cannot store files"),
        ({"storage_url": "file://relative/dir"}, "needs an absolute path"),
        ({}, "action 'rewrite' needs a storage_url"),
        (
            {"storage_url": "s3://no-such-bucket-gmp/x", "storage_options": options},
            "large_file_config.storage_url cannot be used: bucket, container or directory "
            "not found",
        ),
        (
            {
                "storage_url": f"s3://{s3_bucket['name']}/x",
                "storage_options": {
                    **options,
                    "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
                    "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
                    "retries": 1,
                },
            },
            "large_file_config.storage_url cannot be used",
        ),
    ]
    if MISSING_DRIVER:
        cases.append(
            (
                {"storage_url": "gs://bucket/x"},
                "gs:// needs its fsspec driver, which is not installed "
                "(pip install 'genro-mail-proxy[large-files-gcs]')",
            )
        )
    for fields, reason in cases:
        answer = await lf.configure(expect=400, max_size_mb=10, action="rewrite", **fields)
        assert reason in answer["error"], (fields, answer)
        generic = await lf.api.call(
            "PUT",
            "/tenant-settings/large_file_config",
            {"max_size_mb": 10, "action": "rewrite", **fields},
            expect=400,
        )
        assert reason in generic["error"], (fields, generic)
    assert (await lf.api.get("/instance/large-files"))["large_file_config"] is None
    # a directory that cannot be created
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    answer = await lf.configure(expect=400, action="rewrite", storage_url=f"file://{blocker}/sub")
    assert answer["code"] == "storage_check_failed"


async def test_credentials_are_sealed_kept_and_never_shown(
    lf: LargeFilesApp, s3_bucket: dict[str, Any]
) -> None:
    secret = s3_bucket["storage_options"]["secret"]
    stored = await lf.configure(
        max_size_mb=10,
        action="rewrite",
        storage_url=s3_bucket["storage_url"],
        storage_options=s3_bucket["storage_options"],
    )
    shown = stored["large_file_config"]
    assert shown["storage_options_set"] is True and "storage_options" not in shown
    assert secret not in str(stored)
    # a change that leaves the credentials out keeps them (same storage_url)
    changed = await lf.configure(
        max_size_mb=20, action="rewrite", storage_url=s3_bucket["storage_url"]
    )
    assert changed["large_file_config"]["storage_options_set"] is True
    tested = await lf.api.post("/instance/large-files/test", {})
    assert tested["written_read_deleted"] is True
    assert tested["links"] == "signed by the storage"
    async with lf.runtime.storage.database.connect() as conn:
        import sqlalchemy as sa

        raw = [str(r) for r in await conn.execute(sa.text("SELECT value FROM tenant_settings"))]
    assert raw and secret not in " ".join(raw)
    # testing a configuration without storing it
    bad = {"action": "rewrite", "storage_url": "s3://no-such-bucket-gmp/x"}
    bad["storage_options"] = s3_bucket["storage_options"]
    refused = await lf.api.call("POST", "/instance/large-files/test", bad, expect=400)
    assert refused["code"] == "storage_check_failed"
    assert (await lf.api.get("/instance/large-files"))["large_file_config"]["max_size_mb"] == 20


async def test_tenant_routes_check_the_storage_too(
    lf: LargeFilesApp, s3_bucket: dict[str, Any], tmp_path: Path
) -> None:
    if "multitenancy" not in lf.runtime.plugins.names():
        pytest.skip("the multitenancy plugin is not installed")
    bad = {"action": "rewrite", "storage_url": "s3://no-such-bucket-gmp/x"}
    bad["storage_options"] = s3_bucket["storage_options"]
    answer = await lf.api.call(
        "POST", "/tenant", {"id": "acme", "large_file_config": bad}, expect=400
    )
    assert answer["code"] == "storage_check_failed"
    await create_tenant(lf.api, "acme")
    answer = await lf.api.call("PUT", "/tenant/acme", {"large_file_config": bad}, expect=400)
    assert answer["code"] == "storage_check_failed"
    good = {"action": "rewrite", "max_size_mb": 5, "storage_url": f"file://{tmp_path / 'acme'}"}
    await lf.api.call("PUT", "/tenant/acme", {"large_file_config": good})
    tested = await lf.api.post("/instance/large-files/test?tenant_id=acme", {})
    assert tested["tenant_id"] == "acme" and tested["links"] == "served by the proxy"
