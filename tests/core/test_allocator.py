"""``core.allocator``: after a burst of large buffers, the memory goes back to the system."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A burst like one message with a 20 MB attachment: a 20 MB buffer freed (which makes glibc
# raise its dynamic threshold), then 10 × 8 MB buffers interleaved with small objects that
# stay alive, then the large ones freed. Prints the RSS growth that remains, in MB.
BURST = """
import json, sys
from mail_proxy.core.engine.allocator import fix_mmap_threshold
fixed = fix_mmap_threshold() if sys.argv[1] == "fix" else False
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
base = rss()
first = bytes(20 * 2**20); del first
keep, big = [], []
for i in range(10):
    big.append(bytearray(8 * 2**20))
    keep.append(bytearray(1000))
del big
print(json.dumps({"fixed": fixed, "kept_mb": rss() - base}))
"""


def burst(mode: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run(
        [sys.executable, "-c", BURST, mode], capture_output=True, text=True, check=True, env=env
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_large_buffers_are_returned_after_a_burst() -> None:
    without = burst("default")
    fixed = burst("fix")
    assert fixed["fixed"] is True
    # with the fixed threshold the 80 MB of large buffers are unmapped when freed
    assert fixed["kept_mb"] < 10, fixed
    # and the burst does keep memory without it (glibc's dynamic threshold), so the setting
    # is what makes the difference on this platform
    assert without["kept_mb"] > 40, without


def test_an_operator_value_is_kept() -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    code = "from mail_proxy.core.engine.allocator import fix_mmap_threshold; print(fix_mmap_threshold())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "False"
