"""The four built-in fetch modes, the address policy and the cache, against real servers.

Everything here is real: aiohttp servers and bare TCP "canary" listeners on loopback, files,
FIFOs and sockets in a temporary directory, the plugin manager with its entry points, and the
runtime's own resolver. A refused URL always points at a canary, and the canary's count of
accepted connections proves the refusal happened before any connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.ce.fetch.netpolicy import AddressPolicy, AddressRefused, PolicyResolver
from mail_proxy.core.contracts.fetch import FetchError
from mail_proxy.core.contracts.model import Tenant
from mail_proxy.core.engine.attachments import (
    AttachmentResolver,
    get_resolver,
    validate_attachments,
)
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.loader import create_plugin_manager
from support.fetch_servers import Canary, FileServer

LOOPBACK = ["127.0.0.0/8"]
ALL_BYTES = bytes(range(256)) * 9


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fails(text: str) -> Any:
    """``pytest.raises(FetchError)`` whose message contains ``text`` literally."""
    return pytest.raises(FetchError, match=re.escape(text))


@pytest.fixture
async def runtime(make_settings: Callable[..., Any]) -> AsyncIterator[Callable[..., Runtime]]:
    """``runtime(**settings)`` → a Runtime built by the real plugin manager (stopped after)."""
    made: list[Runtime] = []

    def build(**overrides: Any) -> Runtime:
        rt = Runtime.create(make_settings(**overrides), create_plugin_manager())
        made.append(rt)
        return rt

    yield build
    for rt in made:
        for name in rt.fetchers:
            await rt.fetchers.get(name).close()


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Any]]:
    """``await servers(FileServer(...) | Canary(...))`` → started, stopped at teardown."""
    started: list[Any] = []

    async def start(server: Any) -> Any:
        await server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.stop()


async def fetch_one(rt: Runtime, att: dict[str, Any], tenant: Tenant | None = None) -> bytes:
    tenant = tenant or Tenant(id="t1")
    [result] = await get_resolver(rt).resolve(tenant, [att], "m1")
    return result.content


# -- base64 ------------------------------------------------------------------------------------


async def test_base64_exact_bytes_with_and_without_prefix(runtime: Any) -> None:
    rt = runtime()
    encoded = base64.b64encode(ALL_BYTES).decode()
    atts = [
        {"filename": "a.bin", "storage_path": "base64:" + encoded},
        {"filename": "b.bin", "storage_path": encoded, "fetch_mode": "base64"},
        {
            "filename": "c.bin",
            "storage_path": "base64:" + encoded,
            "fetch_mode": "base64",
            "mime_type": "application/x-test",
        },
    ]
    assert validate_attachments(atts, rt) is None
    result = await get_resolver(rt).resolve(Tenant(id="t1"), atts, "m1")
    assert [r.filename for r in result] == ["a.bin", "b.bin", "c.bin"]
    assert all(r.content == ALL_BYTES for r in result)
    assert [r.mime_type for r in result] == [None, None, "application/x-test"]


@pytest.mark.parametrize("payload", ["base64:@@@@", "base64:QUJD!", "base64:QUI", "base64:QU=JD"])
async def test_base64_invalid_is_rejected_at_enqueue(runtime: Any, payload: str) -> None:
    rt = runtime()
    atts = [
        {"filename": "ok.txt", "storage_path": "base64:QUJD"},
        {"filename": "bad.txt", "storage_path": payload},
    ]
    assert validate_attachments(atts, rt) == "attachment 2: invalid base64 content"
    with fails("attachment 'bad.txt': invalid base64"):
        await get_resolver(rt).resolve(Tenant(id="t1"), atts, "m1")


async def test_base64_over_the_cap_is_rejected(runtime: Any) -> None:
    rt = runtime(attachment_max_mb=0.001)  # 1048 bytes
    big = base64.b64encode(b"z" * 1049).decode()
    reason = validate_attachments([{"filename": "x", "storage_path": "base64:" + big}], rt)
    assert reason is not None and "too large" in reason
    fits = base64.b64encode(b"z" * 1048).decode()
    assert validate_attachments([{"filename": "x", "storage_path": "base64:" + fits}], rt) is None


# -- filesystem --------------------------------------------------------------------------------


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "report.pdf").write_bytes(ALL_BYTES)
    (tmp_path / "outside.txt").write_bytes(b"secret outside the base")
    return base


async def test_filesystem_exact_bytes_absolute_and_relative(runtime: Any, base_dir: Path) -> None:
    rt = runtime(attachment_base_dirs=[str(base_dir)])
    absolute = {"filename": "r.pdf", "storage_path": str(base_dir / "sub" / "report.pdf")}
    relative = {"filename": "r.pdf", "storage_path": "sub/report.pdf", "fetch_mode": "filesystem"}
    assert validate_attachments([absolute, relative], rt) is None
    assert await fetch_one(rt, absolute) == ALL_BYTES
    assert await fetch_one(rt, relative) == ALL_BYTES


async def test_filesystem_disabled_without_base_dirs(runtime: Any, base_dir: Path) -> None:
    rt = runtime()
    att = {"filename": "r.pdf", "storage_path": str(base_dir / "sub" / "report.pdf")}
    reason = validate_attachments([att], rt)
    assert reason is not None
    assert reason.startswith("attachment 1: filesystem fetch mode is disabled")
    with fails("disabled"):
        await fetch_one(rt, att)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside.txt", "'..'"),
        ("sub/../../outside.txt", "'..'"),
        ("{tmp}/outside.txt", "outside the allowed base"),
        ("/etc/passwd", "outside the allowed base"),
        ("/proc/self/environ", "/proc, /sys and /dev"),
        ("sub/report.pdf\x00.txt", "NUL"),
    ],
)
async def test_filesystem_paths_refused_at_enqueue_and_at_fetch(
    runtime: Any, base_dir: Path, path: str, reason: str
) -> None:
    rt = runtime(attachment_base_dirs=[str(base_dir)])
    att = {
        "filename": "x",
        "storage_path": path.format(tmp=base_dir.parent),
        "fetch_mode": "filesystem",
    }
    problem = validate_attachments([att], rt)
    assert problem is not None and reason in problem
    with fails("attachment 'x'"):
        await fetch_one(rt, att)


async def test_proc_and_dev_refused_even_when_the_base_is_root(runtime: Any) -> None:
    rt = runtime(attachment_base_dirs=["/"])
    for path in ("/proc/self/environ", "/dev/zero", "/sys/kernel/notes"):
        att = {"filename": "x", "storage_path": path}
        problem = validate_attachments([att], rt)
        assert problem is not None and "/proc, /sys and /dev" in problem
        with pytest.raises(FetchError):
            await fetch_one(rt, att)


async def test_dev_zero_refused_when_dev_is_a_base(runtime: Any) -> None:
    rt = runtime(attachment_base_dirs=["/dev"])
    with fails("/proc, /sys and /dev"):
        await fetch_one(rt, {"filename": "z", "storage_path": "zero", "fetch_mode": "filesystem"})


async def test_symlink_out_of_the_base_is_refused(runtime: Any, base_dir: Path) -> None:
    outside = base_dir.parent / "outside.txt"
    (base_dir / "link.txt").symlink_to(outside)
    (base_dir / "linkdir").symlink_to(base_dir.parent)
    (base_dir / "devlink").symlink_to("/dev/zero")
    rt = runtime(attachment_base_dirs=[str(base_dir)])
    for path in ("link.txt", "linkdir/outside.txt", "devlink"):
        att = {"filename": "x", "storage_path": path, "fetch_mode": "filesystem"}
        assert validate_attachments([att], rt) is None  # lexically fine: caught at fetch time
        with pytest.raises(FetchError, match=r"escapes the allowed base|/proc, /sys or /dev"):
            await fetch_one(rt, att)


async def test_symlink_inside_the_base_is_followed(runtime: Any, base_dir: Path) -> None:
    (base_dir / "alias.pdf").symlink_to(base_dir / "sub" / "report.pdf")
    rt = runtime(attachment_base_dirs=[str(base_dir)])
    att = {"filename": "x", "storage_path": "alias.pdf", "fetch_mode": "filesystem"}
    assert await fetch_one(rt, att) == ALL_BYTES


async def test_fifo_socket_and_directory_are_refused(runtime: Any, base_dir: Path) -> None:
    os.mkfifo(base_dir / "pipe")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(base_dir / "sock"))
    try:
        rt = runtime(attachment_base_dirs=[str(base_dir)], attachment_timeout=5.0)
        for name in ("pipe", "sock", "sub"):
            att = {"filename": name, "storage_path": name, "fetch_mode": "filesystem"}
            with fails("not a regular file"):
                await fetch_one(rt, att)
    finally:
        sock.close()


async def test_file_over_the_cap_and_missing_file(runtime: Any, base_dir: Path) -> None:
    (base_dir / "big.bin").write_bytes(b"b" * 1049)
    (base_dir / "fits.bin").write_bytes(b"f" * 1048)
    rt = runtime(attachment_base_dirs=[str(base_dir)], attachment_max_mb=0.001)
    fs = {"fetch_mode": "filesystem", "filename": "x"}
    with fails("too large"):
        await fetch_one(rt, {**fs, "storage_path": "big.bin"})
    assert await fetch_one(rt, {**fs, "storage_path": "fits.bin"}) == b"f" * 1048
    with fails("file not found: nope.bin"):
        await fetch_one(rt, {**fs, "storage_path": "nope.bin"})


# -- endpoint ----------------------------------------------------------------------------------


async def test_endpoint_tenant_url_with_bearer_auth(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["doc_id=123"] = ALL_BYTES
    srv.required_auth = "Bearer tenant-token"
    rt = runtime(fetch_allow_networks=LOOPBACK)
    tenant = Tenant(
        id="t1",
        client_base_url=srv.url + "/",
        client_auth={"method": "bearer", "token": "tenant-token"},
    )
    att = {"filename": "report.pdf", "storage_path": "doc_id=123"}  # inferred: endpoint
    assert validate_attachments([att], rt) is None
    assert await fetch_one(rt, att, tenant) == ALL_BYTES
    [req] = srv.requests
    assert (req["method"], req["path"]) == ("POST", "/mail-proxy/attachments")
    assert req["json"] == {"storage_path": "doc_id=123"}


async def test_endpoint_basic_auth_and_custom_path(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer(endpoint_path="/api/att"))
    srv.files["k"] = b"basic content"
    srv.required_auth = "Basic " + base64.b64encode(b"u:p w").decode()
    rt = runtime(fetch_allow_networks=LOOPBACK)
    tenant = Tenant(
        id="t1",
        client_base_url=srv.url,
        client_attachment_path="/api/att",
        client_auth={"method": "basic", "user": "u", "password": "p w"},
    )
    assert await fetch_one(rt, {"filename": "f", "storage_path": "k"}, tenant) == b"basic content"
    bad = Tenant(
        id="t1",
        client_base_url=srv.url,
        client_attachment_path="/api/att",
        client_auth={"method": "basic", "user": "u", "password": "wrong"},
    )
    with fails("attachment 'f': HTTP 401"):
        await fetch_one(rt, {"filename": "f", "storage_path": "k"}, bad)
    # The attachment's own auth replaces the tenant's.
    own = {
        "filename": "f",
        "storage_path": "k",
        "auth": {"method": "basic", "user": "u", "password": "p w"},
    }
    assert await fetch_one(rt, own, bad) == b"basic content"


async def test_endpoint_operator_url_is_trusted(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["doc"] = b"from the operator's endpoint"
    rt = runtime(attachment_base_url=srv.url)  # loopback, and no allow-list: trusted
    got = await fetch_one(rt, {"filename": "f", "storage_path": "doc"}, Tenant(id="t1"))
    assert got == b"from the operator's endpoint"


async def test_endpoint_tenant_url_to_loopback_is_refused(runtime: Any, servers: Any) -> None:
    canary = await servers(Canary())
    rt = runtime()
    tenant = Tenant(id="t1", client_base_url=f"http://127.0.0.1:{canary.port}")
    with fails("address policy: 127.0.0.1 is a loopback address"):
        await fetch_one(rt, {"filename": "f", "storage_path": "doc"}, tenant)
    tenant = Tenant(id="t1", client_base_url=f"http://localhost:{canary.port}")
    with fails("'localhost' resolves to 127.0.0.1"):
        await fetch_one(rt, {"filename": "f", "storage_path": "doc"}, tenant)
    assert canary.connections == 0


async def test_endpoint_without_any_url_and_http_errors(runtime: Any, servers: Any) -> None:
    rt = runtime(fetch_allow_networks=LOOPBACK)
    with fails("has no client_base_url and GMP_ATTACHMENT_BASE_URL"):
        await fetch_one(rt, {"filename": "f", "storage_path": "doc"})
    srv = await servers(FileServer())
    with fails("attachment 'f': HTTP 404"):
        await fetch_one(
            rt,
            {"filename": "f", "storage_path": "missing"},
            Tenant(id="t1", client_base_url=srv.url),
        )


# -- http_url ----------------------------------------------------------------------------------


async def test_http_url_exact_bytes_and_attachment_auth(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["a.bin"] = ALL_BYTES
    rt = runtime(fetch_allow_networks=LOOPBACK)
    att = {
        "filename": "a.bin",
        "storage_path": f"{srv.url}/files/a.bin",
        "auth": {"method": "bearer", "token": "per-attachment"},
    }
    assert validate_attachments([att], rt) is None
    assert await fetch_one(rt, att) == ALL_BYTES
    assert srv.requests[0]["headers"]["Authorization"] == "Bearer per-attachment"
    # By host name too (resolved by the policy resolver, then connected to the vetted address).
    named = {"filename": "a.bin", "storage_path": f"http://localhost:{srv.port}/files/a.bin"}
    assert await fetch_one(rt, named) == ALL_BYTES


async def test_tenant_auth_goes_only_to_the_tenants_own_origin(runtime: Any, servers: Any) -> None:
    own = await servers(FileServer("127.0.0.1"))
    other = await servers(FileServer("127.0.0.2"))
    own.files["f"] = other.files["f"] = b"data"
    rt = runtime(fetch_allow_networks=LOOPBACK)
    tenant = Tenant(
        id="t1", client_base_url=own.url, client_auth={"method": "bearer", "token": "tenant-secret"}
    )
    await fetch_one(rt, {"filename": "f", "storage_path": f"{own.url}/files/f"}, tenant)
    await fetch_one(rt, {"filename": "f", "storage_path": f"{other.url}/files/f"}, tenant)
    assert own.requests[0]["headers"].get("Authorization") == "Bearer tenant-secret"
    assert "Authorization" not in other.requests[0]["headers"]


REFUSED_TO_CANARY = [
    ("http://127.0.0.1:{port}/x", "loopback"),
    ("http://localhost:{port}/x", "'localhost' resolves to 127.0.0.1"),
    ("http://2130706433:{port}/x", "non-canonical numeric"),
    ("http://0x7f.0.0.1:{port}/x", "non-canonical numeric"),
    ("http://0177.0.0.1:{port}/x", "non-canonical numeric"),
    ("http://127.1:{port}/x", "non-canonical numeric"),
    ("http://[::ffff:127.0.0.1]:{port}/x", "loopback"),
    ("http://[::1]:{port6}/x", "loopback"),
]


@pytest.mark.parametrize(("template", "reason"), REFUSED_TO_CANARY)
async def test_urls_to_local_addresses_never_connect(
    runtime: Any, servers: Any, template: str, reason: str
) -> None:
    canary = await servers(Canary("127.0.0.1"))
    try:
        canary6 = await servers(Canary("::1"))
    except OSError:
        if "port6" in template:
            pytest.skip("this machine has no IPv6 loopback")
        canary6 = Canary("::1")  # never started: its count stays 0 by construction
    url = template.format(port=canary.port, port6=canary6.port)
    rt = runtime()
    att = {"filename": "f", "storage_path": url}
    if "localhost" not in url:  # literal and numeric hosts are refused at enqueue already
        problem = validate_attachments([att], rt)
        assert problem is not None and reason in problem
    with fails("address policy") as err:
        await fetch_one(rt, att)  # the send-time check stands on its own
    assert reason in str(err.value)
    assert canary.connections == 0 and canary6.connections == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/x", "a private address"),
        ("http://192.168.1.20/x", "a private address"),
        ("http://172.16.0.1/x", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "a cloud metadata address"),
        ("http://169.254.1.1/x", "a link-local address"),
        ("http://100.64.0.1/x", "shared"),
        ("http://224.0.0.1/x", "a multicast address"),
        ("http://0.0.0.0/x", "the unspecified address"),
        ("http://[fe80::1]/x", "a link-local address"),
        ("http://[2002:7f00:1::]/x", "loopback"),
        ("http://[64:ff9b::a00:1]/x", "a private address"),
    ],
)
async def test_private_and_metadata_addresses_are_refused(
    runtime: Any, url: str, reason: str
) -> None:
    rt = runtime(attachment_timeout=5.0)
    att = {"filename": "f", "storage_path": url}
    problem = validate_attachments([att], rt)
    assert problem is not None and reason in problem
    with pytest.raises(FetchError, match="refused by the address policy"):
        await fetch_one(rt, att)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://h/x"])
async def test_non_http_schemes_are_refused(runtime: Any, url: str) -> None:
    rt = runtime(fetch_allow_networks=LOOPBACK)
    att = {"filename": "f", "storage_path": url, "fetch_mode": "http_url"}
    problem = validate_attachments([att], rt)
    assert problem is not None and "is not allowed (only http and https)" in problem
    with fails("only http and https"):
        await fetch_one(rt, att)


async def test_credentials_in_the_url_are_refused(runtime: Any) -> None:
    rt = runtime()
    problem = validate_attachments(
        [{"filename": "f", "storage_path": "https://user:pw@example.com/f"}], rt
    )
    assert problem == (
        "attachment 1: credentials in the URL are not accepted (use the attachment's auth)"
    )


async def test_redirect_to_loopback_is_refused(runtime: Any, servers: Any) -> None:
    """Only 127.0.0.2 is allowed; it redirects to the canary on 127.0.0.1."""
    srv = await servers(FileServer("127.0.0.2"))
    canary = await servers(Canary("127.0.0.1"))
    rt = runtime(fetch_allow_networks=["127.0.0.2/32"])
    for target in (
        f"http://127.0.0.1:{canary.port}/x",
        f"http://localhost:{canary.port}/x",
        f"http://2130706433:{canary.port}/x",
    ):
        url = f"{srv.url}/redirect?to={target}"
        with pytest.raises(FetchError, match="refused by the address policy"):
            await fetch_one(rt, {"filename": "f", "storage_path": url})
    with fails("only http and https"):
        await fetch_one(rt, {"filename": "f", "storage_path": f"{srv.url}/redirect?to=file:///x"})
    assert srv.count("/redirect") == 4  # the allowed server was reached every time
    assert canary.connections == 0


async def test_redirects_are_followed_within_the_policy(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["final"] = b"after two hops"
    rt = runtime(fetch_allow_networks=LOOPBACK)
    inner = "/redirect?to=/files/final%26status=307"
    url = f"{srv.url}/redirect?to={inner}&status=301"
    assert await fetch_one(rt, {"filename": "f", "storage_path": url}) == b"after two hops"
    with fails("too many redirects"):
        await fetch_one(rt, {"filename": "f", "storage_path": f"{srv.url}/loop"})
    assert srv.count("/loop") == 6  # the first request and 5 redirects, then it stopped


async def test_cross_origin_redirect_drops_credentials(runtime: Any, servers: Any) -> None:
    first = await servers(FileServer("127.0.0.1"))
    second = await servers(FileServer("127.0.0.2"))
    second.files["f"] = b"elsewhere"
    rt = runtime(fetch_allow_networks=LOOPBACK)
    att = {
        "filename": "f",
        "storage_path": f"{first.url}/redirect?to={second.url}/files/f",
        "auth": {"method": "bearer", "token": "only-for-first"},
    }
    assert await fetch_one(rt, att) == b"elsewhere"
    assert first.requests[0]["headers"]["Authorization"] == "Bearer only-for-first"
    assert "Authorization" not in second.requests[0]["headers"]


async def test_http_size_cap_declared_and_streamed(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    rt = runtime(fetch_allow_networks=LOOPBACK, attachment_max_mb=0.01)  # 10485 bytes
    with pytest.raises(FetchError, match=r"too large: 20000 bytes \(limit 10485\)"):
        await fetch_one(rt, {"filename": "f", "storage_path": f"{srv.url}/declared/20000"})
    with fails("too large: more than 10485 bytes"):
        await fetch_one(rt, {"filename": "f", "storage_path": f"{srv.url}/stream/5000000"})
    got = await fetch_one(rt, {"filename": "f", "storage_path": f"{srv.url}/stream/10485"})
    assert got == b"y" * 10485


async def test_http_timeout(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    rt = runtime(fetch_allow_networks=LOOPBACK, attachment_timeout=0.3)
    with fails("attachment 'f': timed out after 0.3s"):
        await fetch_one(rt, {"filename": "f", "storage_path": f"{srv.url}/slow"})


async def test_policy_resolver_returns_only_vetted_addresses() -> None:
    allowed = PolicyResolver(AddressPolicy(LOOPBACK))
    results = await allowed.resolve("localhost", 80, socket.AF_UNSPEC)
    assert results and all(r["host"] in ("127.0.0.1", "::1") for r in results)
    assert all(r["flags"] & socket.AI_NUMERICHOST for r in results)
    with pytest.raises(AddressRefused, match="'localhost' resolves to"):
        await PolicyResolver(AddressPolicy()).resolve("localhost", 80, socket.AF_UNSPEC)
    with pytest.raises(AddressRefused, match="non-canonical"):
        await allowed.resolve("0x7f.1", 80, socket.AF_UNSPEC)


# -- cache through the resolver ----------------------------------------------------------------


async def test_same_md5_marker_is_fetched_once(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["doc"] = ALL_BYTES
    rt = runtime(fetch_allow_networks=LOOPBACK)
    tenant = Tenant(id="t1", client_base_url=srv.url)
    att = {"filename": f"report_{{MD5:{md5(ALL_BYTES)}}}.pdf", "storage_path": "doc"}
    resolver = get_resolver(rt)
    for _ in range(3):
        [result] = await resolver.resolve(tenant, [att], "m1")
        assert (result.filename, result.content) == ("report.pdf", ALL_BYTES)
    assert srv.count() == 1
    assert resolver.cache.stats.memory_hits == 2
    assert get_resolver(rt) is resolver is rt.local(AttachmentResolver)


async def test_short_faq_marker_is_a_cache_key(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["doc"] = b"short key content"
    rt = runtime(fetch_allow_networks=LOOPBACK)
    tenant = Tenant(id="t1", client_base_url=srv.url)
    att = {"filename": "report_{MD5:a1b2c3d4e5f6}.pdf", "storage_path": "doc"}
    for _ in range(2):
        [result] = await get_resolver(rt).resolve(tenant, [att], "m1")
        assert (result.filename, result.content) == ("report.pdf", b"short key content")
    assert srv.count() == 1


async def test_corrupted_disk_entry_is_detected_and_refetched(
    runtime: Any, servers: Any, tmp_path: Path
) -> None:
    content = os.urandom(8192)
    srv = await servers(FileServer())
    srv.files["big"] = content
    rt = runtime(
        fetch_allow_networks=LOOPBACK,
        cache_memory_item_max_kb=1,
        cache_disk_dir=str(tmp_path / "cache"),
    )
    tenant = Tenant(id="t1", client_base_url=srv.url)
    key = md5(content)
    att = {"filename": f"big_{{MD5:{key}}}.bin", "storage_path": "big"}
    resolver = get_resolver(rt)
    assert (await resolver.resolve(tenant, [att], "m1"))[0].content == content
    name = resolver.cache.disk_path("t1", key)
    assert name is not None
    path = Path(name)
    assert await asyncio.to_thread(path.is_file)
    assert (await resolver.resolve(tenant, [att], "m1"))[0].content == content
    assert (srv.count(), resolver.cache.stats.disk_hits) == (1, 1)

    raw = bytearray(await asyncio.to_thread(path.read_bytes))
    raw[-100] ^= 0xFF  # flip one byte of the stored content
    await asyncio.to_thread(path.write_bytes, bytes(raw))
    assert (await resolver.resolve(tenant, [att], "m1"))[0].content == content
    assert (srv.count(), resolver.cache.stats.corrupt) == (2, 1)
    assert await asyncio.to_thread(path.read_bytes) != bytes(raw)  # the good content again
    assert (await resolver.resolve(tenant, [att], "m1"))[0].content == content
    assert srv.count() == 2


async def test_another_tenant_with_the_same_hash_misses(runtime: Any, servers: Any) -> None:
    srv_a = await servers(FileServer())
    srv_b = await servers(FileServer())
    srv_a.files["doc"] = b"tenant A's confidential file"
    srv_b.files["doc"] = b"tenant A's confidential file"
    rt = runtime(fetch_allow_networks=LOOPBACK)
    key = md5(b"tenant A's confidential file")
    att = {"filename": f"x_{{MD5:{key}}}.pdf", "storage_path": "doc"}
    await get_resolver(rt).resolve(Tenant(id="A", client_base_url=srv_a.url), [att], "m1")
    await get_resolver(rt).resolve(Tenant(id="B", client_base_url=srv_b.url), [att], "m1")
    assert (srv_a.count(), srv_b.count()) == (1, 1)  # B fetched from its own server


async def test_content_md5_mismatch_fails_the_attachment(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["doc"] = b"actual content"
    rt = runtime(fetch_allow_networks=LOOPBACK)
    att = {"filename": "f.txt", "storage_path": "doc", "content_md5": md5(b"other")}
    with fails("attachment 'f.txt': content does not match content_md5"):
        await get_resolver(rt).resolve(Tenant(id="t1", client_base_url=srv.url), [att], "m1")
    good = {**att, "content_md5": md5(b"actual content").upper()}
    [result] = await get_resolver(rt).resolve(
        Tenant(id="t1", client_base_url=srv.url), [good], "m1"
    )
    assert result.content == b"actual content"


async def test_concurrent_messages_with_one_key_fetch_once(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["doc"] = b"campaign attachment"
    rt = runtime(fetch_allow_networks=LOOPBACK, cache_memory_max_mb=0)  # no cache at all
    tenant = Tenant(id="t1", client_base_url=srv.url)
    att = {"filename": "a_{MD5:beef}.pdf", "storage_path": "doc"}
    results = await asyncio.gather(
        *(get_resolver(rt).resolve(tenant, [att], "m1") for _ in range(5))
    )
    assert all(r[0].content == b"campaign attachment" for r in results)
    assert srv.count() == 1
    await get_resolver(rt).resolve(tenant, [att], "m1")
    assert srv.count() == 2  # nothing cached: a later message fetches again


async def test_concurrency_bound_is_honoured(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    for i in range(6):
        srv.files[f"f{i}"] = f"content {i}".encode()
    srv.gate_at = 2
    rt = runtime(fetch_allow_networks=LOOPBACK, max_concurrent_attachments=2)
    tenant = Tenant(id="t1", client_base_url=srv.url)
    msg1 = [{"filename": f"f{i}", "storage_path": f"f{i}"} for i in range(3)]
    msg2 = [{"filename": f"f{i}", "storage_path": f"f{i}"} for i in range(3, 6)]
    r1, r2 = await asyncio.gather(
        get_resolver(rt).resolve(tenant, msg1, "m1"), get_resolver(rt).resolve(tenant, msg2, "m2")
    )
    assert [a.content for a in r1 + r2] == [f"content {i}".encode() for i in range(6)]
    assert srv.count() == 6
    assert srv.peak == 2


async def test_one_failed_attachment_fails_the_message(runtime: Any, servers: Any) -> None:
    srv = await servers(FileServer())
    srv.files["ok"] = b"fine"
    rt = runtime(fetch_allow_networks=LOOPBACK)
    atts = [
        {"filename": "ok.txt", "storage_path": "ok"},
        {"filename": "missing.txt", "storage_path": "nope"},
    ]
    with fails("attachment 'missing.txt': HTTP 404"):
        await get_resolver(rt).resolve(Tenant(id="t1", client_base_url=srv.url), atts, "m1")


# -- third-party plugin ------------------------------------------------------------------------


async def test_vault_plugin_is_discovered_and_fetches(
    runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = tmp_path / "vault.json"
    vault.write_text(json.dumps({"contracts/2024-17": base64.b64encode(ALL_BYTES).decode()}))
    monkeypatch.setenv("GMP_VAULT_FILE", str(vault))
    rt = runtime()
    assert "vault" in rt.fetchers and rt.fetchers.owner("vault") == "vault"
    assert "vault" in rt.plugins.names()
    att = {
        "filename": f"c_{{MD5:{md5(ALL_BYTES)}}}.pdf",
        "storage_path": "contracts/2024-17",
        "fetch_mode": "vault",
    }
    assert validate_attachments([att], rt) is None
    [result] = await get_resolver(rt).resolve(Tenant(id="t1"), [att], "m1")
    assert (result.filename, result.content) == ("c.pdf", ALL_BYTES)
    bad = {**att, "storage_path": "../etc/passwd"}
    assert validate_attachments([bad], rt) == (
        "attachment 1: vault entry names are letters, digits and _ . / - (no '..')"
    )
    with fails("attachment 'c.pdf': no vault entry 'missing'"):
        await get_resolver(rt).resolve(
            Tenant(id="t1"), [{**att, "filename": "c.pdf", "storage_path": "missing"}], "m1"
        )


async def test_canary_does_count_connections(runtime: Any, servers: Any) -> None:
    """Control for the refusal tests: an allowed URL to the canary is counted."""
    canary = await servers(Canary("127.0.0.1"))
    rt = runtime(fetch_allow_networks=LOOPBACK)
    with fails("attachment 'f'"):
        await fetch_one(rt, {"filename": "f", "storage_path": f"http://localhost:{canary.port}/"})
    assert canary.connections >= 1  # (aiohttp may retry a GET once on a dropped connection)
