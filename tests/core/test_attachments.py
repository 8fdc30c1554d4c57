"""Attachment specs, enqueue validation and the two-tier cache (mail_proxy.core.engine.attachments).

The cache tests drive a real :class:`AttachmentCache` on a temporary directory with
injectable clocks, so TTLs are tested without sleeping. Fetch-mode behaviour against real
servers lives in tests/ce/test_fetchers.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.core.contracts.fetch import FetchError
from mail_proxy.core.contracts.model import Tenant
from mail_proxy.core.engine.attachment_cache import AttachmentCache
from mail_proxy.core.engine.attachments import (
    AttachmentError,
    AttachmentResolver,
    get_resolver,
    infer_mode,
    parse_spec,
    split_marker,
    validate_attachments,
)
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.loader import create_plugin_manager


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def runtime(make_settings: Callable[..., Any]) -> Callable[..., Runtime]:
    def build(**overrides: Any) -> Runtime:
        return Runtime.create(make_settings(**overrides), create_plugin_manager())

    return build


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("base64:QUJD", "base64"),
        ("http://example.com/a.pdf", "http_url"),
        ("HTTPS://example.com/a.pdf", "http_url"),
        ("/srv/files/a.pdf", "filesystem"),
        ("doc_id=123", "endpoint"),
        ("files/a.pdf", "endpoint"),
        ("QUJD", "endpoint"),  # plain base64 needs an explicit mode
        ("file:///etc/passwd", "endpoint"),  # never inferred as a local file
    ],
)
def test_mode_inference(path: str, mode: str) -> None:
    assert infer_mode(path) == mode
    assert parse_spec({"filename": "f", "storage_path": path}).fetch_mode == mode


def test_explicit_mode_wins() -> None:
    spec = parse_spec({"filename": "f", "storage_path": "/x", "fetch_mode": "endpoint"})
    assert (spec.fetch_mode, spec.explicit_mode) == ("endpoint", True)


@pytest.mark.parametrize(
    ("filename", "final", "key"),
    [
        ("report_{MD5:ab12}.pdf", "report.pdf", "ab12"),
        ("report_{MD5:a1b2c3d4e5f6}.pdf", "report.pdf", "a1b2c3d4e5f6"),
        ("report-{MD5:AB12}.pdf", "report.pdf", "ab12"),
        ("report.{md5:ab12}.pdf", "report.pdf", "ab12"),
        ("report {MD5:ab12}.pdf", "report.pdf", "ab12"),
        ("report{MD5:ab12}.pdf", "report.pdf", "ab12"),
        ("{MD5:ab12}report.pdf", "report.pdf", "ab12"),
        ("report.pdf_{MD5:" + "f" * 32 + "}", "report.pdf", "f" * 32),
        ("plain.pdf", "plain.pdf", None),
        ("braces_{not a marker}.pdf", "braces_{not a marker}.pdf", None),
    ],
)
def test_md5_marker_is_removed_with_its_separator(
    filename: str, final: str, key: str | None
) -> None:
    assert split_marker(filename) == (final, key)


@pytest.mark.parametrize(
    ("filename", "reason"),
    [
        ("r_{MD5:xyz}.pdf", "invalid {MD5:...} marker"),
        ("r_{MD5:}.pdf", "invalid {MD5:...} marker"),
        ("r_{MD5:" + "a" * 33 + "}.pdf", "invalid {MD5:...} marker"),
        ("a_{MD5:ab}_{MD5:cd}.pdf", "more than one {MD5:...} marker"),
        ("{MD5:ab12}", "filename is empty without its {MD5:...} marker"),
    ],
)
def test_bad_markers_are_rejected(filename: str, reason: str) -> None:
    with pytest.raises(AttachmentError) as err:
        split_marker(filename)
    assert reason in str(err.value)


def test_content_md5_and_keys() -> None:
    full = md5(b"x")
    spec = parse_spec({"filename": "f", "storage_path": "p", "content_md5": full.upper()})
    assert (spec.cache_key, spec.content_md5, spec.verify_md5) == (full, full, full)
    short = parse_spec({"filename": "f_{MD5:ab12}", "storage_path": "p"})
    assert (short.cache_key, short.verify_md5) == ("ab12", None)  # short keys never verify
    marker = parse_spec({"filename": f"f_{{MD5:{full}}}", "storage_path": "p"})
    assert (marker.cache_key, marker.content_md5, marker.verify_md5) == (full, None, full)
    both = parse_spec({"filename": "f_{MD5:ab12}", "storage_path": "p", "content_md5": full})
    assert (both.cache_key, both.verify_md5) == ("ab12", full)
    plain = parse_spec({"filename": "f", "storage_path": "p"})
    assert (plain.cache_key, plain.verify_md5) == (None, None)


@pytest.mark.parametrize(
    ("att", "reason"),
    [
        ("not an object", "must be an object"),
        ({"storage_path": "p"}, "missing filename"),
        ({"filename": "  ", "storage_path": "p"}, "missing filename"),
        ({"filename": "a\r\nBcc: x@y", "storage_path": "p"}, "control character"),
        ({"filename": "a\nb", "storage_path": "p"}, "control character"),
        ({"filename": "a\x00b", "storage_path": "p"}, "control character"),
        ({"filename": "a\tb", "storage_path": "p"}, "control character"),
        ({"filename": "x" * 256, "storage_path": "p"}, "longer than 255"),
        ({"filename": "f"}, "missing storage_path"),
        ({"filename": "f", "storage_path": ""}, "missing storage_path"),
        ({"filename": "f", "storage_path": 12}, "missing storage_path"),
        ({"filename": "f", "storage_path": "p", "fetch_mode": 3}, "fetch_mode must be"),
        ({"filename": "f", "storage_path": "p", "mime_type": "pdf"}, "invalid mime_type"),
        ({"filename": "f", "storage_path": "p", "mime_type": "a/b\r\nX: y"}, "invalid mime_type"),
        ({"filename": "f", "storage_path": "p", "content_md5": "abc"}, "invalid content_md5"),
        ({"filename": "f", "storage_path": "p", "content_md5": "g" * 32}, "invalid content_md5"),
        (
            {"filename": f"f_{{MD5:{'a' * 32}}}", "storage_path": "p", "content_md5": "b" * 32},
            "marker and content_md5 differ",
        ),
        ({"filename": "f", "storage_path": "p", "auth": "token"}, "auth must be an object"),
        ({"filename": "f", "storage_path": "p", "auth": {"method": "digest"}}, "auth method"),
        ({"filename": "f", "storage_path": "p", "auth": {"method": "bearer"}}, "needs a token"),
        (
            {
                "filename": "f",
                "storage_path": "p",
                "auth": {"method": "bearer", "token": "a\r\nX-Evil: 1"},
            },
            "needs a token",
        ),
        (
            {
                "filename": "f",
                "storage_path": "p",
                "auth": {"method": "basic", "user": "a:b", "password": "c"},
            },
            "needs a user",
        ),
    ],
)
def test_parse_spec_rejections(att: Any, reason: str) -> None:
    with pytest.raises(AttachmentError) as err:
        parse_spec(att)
    assert reason in str(err.value)


def test_parse_spec_never_crashes_on_random_input() -> None:
    """Property: any filename either parses to a clean name or fails with AttachmentError."""
    rng = random.Random(20240917)
    alphabet = "ab_-. {}MD5:md5fF0129\r\n\x00\t/é"
    for _ in range(3000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        path = rng.choice(["", "p", "/x", "base64:", "http://h/", name])
        try:
            spec = parse_spec({"filename": name, "storage_path": path})
        except AttachmentError:
            continue
        assert spec.filename.strip() and "{MD5:" not in spec.filename.upper()
        assert not any(c in spec.filename for c in "\r\n\x00\t")
        assert spec.cache_key is None or 1 <= len(spec.cache_key) <= 32


def test_validate_attachments_reasons(runtime: Callable[..., Runtime]) -> None:
    rt = runtime()
    ok = {"filename": "a.txt", "storage_path": "base64:QUJD"}
    assert validate_attachments([], rt) is None
    assert validate_attachments([ok, ok], rt) is None
    assert validate_attachments("nope", rt) == "attachments must be a list"
    assert (
        validate_attachments([ok, {"filename": "b", "storage_path": "x", "fetch_mode": "foo"}], rt)
        == "attachment 2: unknown fetch_mode 'foo'"
    )
    assert (
        validate_attachments([{"filename": "a\r\nb", "storage_path": "x"}], rt)
        == "attachment 1: filename: control character U+000D is not allowed"
    )
    assert validate_attachments([ok, ok, {"filename": "c", "storage_path": "/etc/passwd"}], rt) == (
        "attachment 3: filesystem fetch mode is disabled (no GMP_ATTACHMENT_BASE_DIRS configured)"
    )


async def test_resolver_is_one_per_runtime(runtime: Callable[..., Runtime]) -> None:
    rt = runtime()
    resolver = get_resolver(rt)
    assert get_resolver(rt) is resolver
    assert rt.local(AttachmentResolver) is resolver
    assert get_resolver(runtime()) is not resolver


async def test_resolver_names_the_failed_attachment(runtime: Callable[..., Runtime]) -> None:
    rt = runtime()
    with pytest.raises(FetchError) as err:
        await get_resolver(rt).resolve(
            Tenant(id="t1"), [{"filename": "x", "storage_path": "p", "fetch_mode": "gone"}], "m1"
        )
    assert str(err.value) == "attachment 'x': unknown fetch_mode 'gone'"
    with pytest.raises(FetchError) as err:
        await get_resolver(rt).resolve(Tenant(id="t1"), [{"filename": "x"}], "m1")
    assert str(err.value) == "attachment 1: missing storage_path"


# -- cache -------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_cache(tmp_path: Path | None = None, **overrides: Any) -> tuple[AttachmentCache, Clock]:
    clock = Clock()
    options: dict[str, Any] = {
        "memory_max_bytes": 1000,
        "memory_item_max_bytes": 300,
        "memory_ttl": 60.0,
        "disk_dir": str(tmp_path / "cache") if tmp_path else None,
        "disk_max_bytes": 5000,
        "disk_ttl": 600.0,
        "clock": clock,
        "wall_clock": clock,
    }
    options.update(overrides)
    return AttachmentCache(**options), clock


def disk_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def flip_byte(path: Path, index: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[index] ^= 1
    path.write_bytes(bytes(raw))


async def test_memory_tier_lru_eviction_and_ttl() -> None:
    cache, clock = make_cache()
    for i in range(4):
        await cache.put("t", f"k{i}", bytes([i]) * 300)  # 1200 bytes > 1000: k0 evicted
    assert cache.memory_bytes == 900
    assert await cache.get("t", "k0") is None
    assert await cache.get("t", "k1") == b"\x01" * 300  # now most recently used
    await cache.put("t", "k4", b"\x04" * 300)  # evicts k2, the least recently used
    assert await cache.get("t", "k2") is None
    assert await cache.get("t", "k1") is not None
    assert (cache.stats.evictions, cache.stats.memory_hits) == (2, 2)
    clock.now += 61
    assert await cache.get("t", "k1") is None
    assert cache.stats.expired == 1
    await cache.expire()
    assert cache.memory_bytes == 0


async def test_memory_entry_checked_against_a_full_md5() -> None:
    cache, _ = make_cache()
    await cache.put("t", "a" * 32, b"content")
    assert await cache.get("t", "a" * 32, expected_md5="a" * 32) is None  # wrong content
    assert cache.stats.corrupt == 1
    await cache.put("t", md5(b"content"), b"content")
    assert await cache.get("t", md5(b"content"), md5(b"content")) == b"content"


async def test_tenants_never_share_entries(tmp_path: Path) -> None:
    cache, _ = make_cache(tmp_path)
    await cache.put("A", "ab12", b"A small")
    await cache.put("A", "cd34", b"A" * 1000)  # disk tier
    assert await cache.get("B", "ab12") is None
    assert await cache.get("B", "cd34") is None
    assert await cache.get("A", "ab12") == b"A small"
    assert await cache.get("A", "cd34") == b"A" * 1000
    assert cache.disk_path("A", "cd34") != cache.disk_path("B", "cd34")


async def test_disk_names_are_hashes_never_user_text(tmp_path: Path) -> None:
    cache, _ = make_cache(tmp_path)
    await cache.put("../../etc", "../passwd", b"p" * 400)
    await cache.put("t/../x", "ab", b"q" * 400)
    names = await asyncio.to_thread(disk_files, tmp_path / "cache")
    assert len(names) == 2
    assert all(len(n) == 68 and n.endswith(".bin") for n in names)
    assert await asyncio.to_thread(disk_files, tmp_path) == ["cache"]


async def test_disk_tier_ttl_cap_and_restart(tmp_path: Path) -> None:
    cache, clock = make_cache(tmp_path, disk_max_bytes=2500)
    for i in range(3):
        await cache.put("t", f"k{i}", bytes([i]) * 1000)  # 3000 > 2500: k0 evicted
    assert await cache.get("t", "k0") is None
    assert await cache.get("t", "k1") == b"\x01" * 1000
    assert cache.stats.disk_hits == 1
    assert len(await asyncio.to_thread(disk_files, tmp_path / "cache")) == 2

    # A new process over the same directory finds the entries (the TTL uses file mtimes).
    reborn = AttachmentCache(
        memory_max_bytes=1000,
        memory_item_max_bytes=300,
        memory_ttl=60.0,
        disk_dir=str(tmp_path / "cache"),
        disk_max_bytes=2500,
        disk_ttl=600.0,
    )
    assert await reborn.get("t", "k2") == b"\x02" * 1000

    clock.now = os.stat(tmp_path / "cache" / cache.disk_name("t", "k2")).st_mtime + 601
    await cache.expire()
    assert await asyncio.to_thread(disk_files, tmp_path / "cache") == []
    assert cache.disk_bytes == 0


async def test_damaged_disk_entries_are_dropped(tmp_path: Path) -> None:
    cache, _ = make_cache(tmp_path)
    data = os.urandom(2000)
    key = md5(data)
    await cache.put("t", key, data)
    path = Path(cache.disk_path("t", key) or "")

    # Damaged content under a short key: the stored digest catches it.
    await cache.put("t", "ab", data)
    short = Path(cache.disk_path("t", "ab") or "")
    await asyncio.to_thread(flip_byte, short, 500)
    assert await cache.get("t", "ab") is None
    assert not await asyncio.to_thread(short.exists)

    # A consistent file (header digest recomputed) holding other content: the key catches it.
    other = b"other content"
    forged = b"GMPCACHE1 " + md5(other).encode() + b"\n" + other
    await asyncio.to_thread(path.write_bytes, forged)
    assert await cache.get("t", key, expected_md5=key) is None
    assert not await asyncio.to_thread(path.exists)

    # Truncated header.
    await cache.put("t", key, data)
    await asyncio.to_thread(path.write_bytes, b"GMP")
    assert await cache.get("t", key, key) is None
    assert cache.stats.corrupt == 3


async def test_items_too_big_for_every_tier_are_not_cached(tmp_path: Path) -> None:
    cache, _ = make_cache(tmp_path, disk_max_bytes=1500)
    await cache.put("t", "big", b"x" * 2000)
    assert await cache.get("t", "big") is None
    memory_only, _ = make_cache(None)
    await memory_only.put("t", "mid", b"x" * 400)  # too big for memory, no disk tier
    assert await memory_only.get("t", "mid") is None
    assert memory_only.stats.stores == 0
