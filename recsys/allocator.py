"""glibc's malloc thresholds, fixed for tensor-sized blocks (Linux; `recsys` sets them at start).

glibc gives a block above its mmap threshold fresh pages from the kernel and hands the free top of
its heap back beyond its trim threshold. Both thresholds start small and adapt, so a training step
that allocates and frees table-sized tensors (LightGCN on Gowalla: [40,981 x 64] floats, 10 MB, a
dozen times a step) keeps faulting in zeroed pages. Fixed thresholds of 32 MB (glibc's largest
adaptive value) and 256 MB keep freed blocks for the next step (tests/test_allocator.py counts the page
faults of LightGCN steps on Gowalla-sized tables either way). Larger blocks are mapped as before.

``RECSYS_MALLOC_TUNING=0`` leaves malloc alone, and so do glibc's own ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` (a user's settings win).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 32 << 20  # bytes
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def tune_malloc() -> bool:
    """Set both thresholds (setting one would stop glibc adapting the other); True if both were set."""
    if os.environ.get("RECSYS_MALLOC_TUNING", "1") == "0" or any(name in os.environ for name in _USER_SETTINGS):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
