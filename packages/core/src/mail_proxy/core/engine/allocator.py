"""Give large freed buffers back to the operating system (glibc only).

A message with a 20 MB attachment allocates a few buffers of tens of MB and frees them a
second later. glibc serves such buffers with their own ``mmap``, but after the first one is
freed it raises its threshold to that size ("dynamic mmap threshold"): from then on buffers
of that size come from the heap, and a heap that is freed in the middle is not returned, so
the process keeps the high-water mark of every burst. Measured with ``bench/run --scenarios
attachments``: peak RSS 273 MB with the dynamic threshold, 171 MB with a fixed one.

:func:`fix_mmap_threshold` sets the threshold to a fixed 128 KiB (glibc's default starting
value; setting it explicitly turns the dynamic adjustment off). Buffers larger than that
(attachments, large request bodies) then always get their own mapping and are unmapped when
freed. The small objects of ordinary messages are not affected. An operator who set
``MALLOC_MMAP_THRESHOLD_`` keeps their value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

#: ``mallopt`` parameter number of ``M_MMAP_THRESHOLD`` (glibc ``malloc.h``).
M_MMAP_THRESHOLD = -3
#: The fixed threshold (bytes).
MMAP_THRESHOLD = 128 * 1024


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold (see the module doc). True when it was set."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to fix
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("glibc mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD, done)
    return done
