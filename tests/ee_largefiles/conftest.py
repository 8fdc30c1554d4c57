"""Fixtures of the large-files tests: a real S3 API (``moto_server`` on a loopback port, used
through s3fs as a user's bucket would be), the real application with the plugin installed,
and a real SMTP server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from ee_largefiles.lf import LargeFilesApp

from mail_proxy.core.testing.smtp import SmtpTestServer

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server (moto) on 127.0.0.1, for the whole test session."""
    if not MOTO_SERVER.exists():
        pytest.fail("moto_server is not installed (pip install 'moto[server]': the dev extra)")
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on port {port}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> dict[str, Any]:
    """A fresh bucket: ``{"name", "storage_url", "storage_options"}``."""
    import boto3

    name = f"gmp-{uuid.uuid4().hex[:12]}"
    options = {
        "key": "test-access-key",
        "secret": "s3-secret-Sentinel-9d1f",
        "client_kwargs": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return {"name": name, "storage_url": f"s3://{name}/offloaded", "storage_options": options}


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpTestServer]:
    async with SmtpTestServer() as server:
        yield server


@pytest.fixture
async def lf(
    aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path, smtp: SmtpTestServer
) -> LargeFilesApp:
    """The app (SQLite, dispatcher running) with an SMTP account and a files directory."""
    return await LargeFilesApp.start(aiohttp_client_factory, make_settings, tmp_path, smtp)
