"""``mail-proxy NAME large-files list|purge|test`` through the real script against a real
running instance (``mail-proxy start``), and the download of a link it wrote, over HTTP
from that process."""

from __future__ import annotations

import base64
import email
import email.policy
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ee_largefiles.lf import links

from mail_proxy.core.testing.net import free_port
from support.cli_runner import Cli, http


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    cli = Cli(tmp_path_factory.mktemp("home"))
    cli.ok("start", "main", "--port", str(free_port()))
    yield cli
    cli.cleanup()


def rest(srv: Cli, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, answer = http(method, srv.url("main") + path, srv.token("main"), body)
    assert status == expect, (status, answer)
    return answer


def test_list_test_and_purge(srv: Cli, tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    config = {"max_size_mb": 1, "action": "rewrite", "storage_url": f"file://{store}"}
    rest(srv, "PUT", "/instance/large-files", config)
    account = {"id": "main", "transport": "file", "options": {"directory": str(out)}}
    rest(srv, "POST", "/account", {**account, "default": True})
    content = os.urandom(1_600_000)
    att = {"filename": "plan.pdf", "storage_path": "base64:" + base64.b64encode(content).decode()}
    msg = {"id": "cli-1", "from": "a@example.com", "to": ["b@example.com"], "subject": "s"}
    sent = rest(
        srv, "POST", "/commands/add-messages", {"messages": [{**msg, "attachments": [att]}]}
    )
    assert sent["queued"] == 1, sent
    deadline = time.monotonic() + 30
    while rest(srv, "GET", "/messages/cli-1")["message"]["status"] != "sent":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    [eml] = list(out.glob("*.eml"))
    written = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    [url] = links(written.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert url.startswith(srv.url("main") + "/files/")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == content
        assert 'filename="plan.pdf"' in resp.headers["Content-Disposition"]

    tested = srv.ok("main", "large-files", "test").out
    assert "storage ok" in tested and "served by the proxy" in tested
    listed = srv.ok("main", "large-files", "list").out
    assert "cli-1" in listed and "plan.pdf" in listed and "1.5" in listed
    [shown] = srv.ok("main", "large-files", "list", "--json").json()["files"]
    assert shown["size"] == len(content) and shown["tenant_id"] == "default"
    assert "(no offloaded files)" in srv.ok("main", "large-files", "list", "--expired").out
    assert "0 file(s) deleted" in srv.ok("main", "large-files", "purge", "--expired").out
    assert "1 file(s) deleted" in srv.ok("main", "large-files", "purge", "--yes").out
    assert not [p for p in store.rglob("*") if p.is_file()]
    assert "(no offloaded files)" in srv.ok("main", "large-files", "list").out
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(url, timeout=10)
    assert gone.value.code == 404

    failed = srv("main", "large-files", "test", "--tenant", "nosuch")
    assert failed.code == 1 and "no tenant 'nosuch'" in failed.err, failed
