"""`sys/peak_rss_mb` is this process's own peak, not its parent's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from recsys.models.base import peak_rss_mb

_CHILD = """
import numpy as np
from recsys.models.base import peak_rss_mb
before = peak_rss_mb()
block = np.ones(128 * 2**20 // 8)  # 128 MiB, every page written
print(before, peak_rss_mb(), block[-1])
"""


def _child(code: str) -> list[float]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [float(value) for value in done.stdout.split()]


def test_peak_rss_grows_with_a_touched_allocation() -> None:
    # In a fresh process: this one's peak may already lie far above what it holds now.
    before, after, _ = _child(_CHILD)
    assert after >= before + 120


def test_a_child_process_does_not_inherit_the_parents_peak() -> None:
    # Linux's ru_maxrss would report at least this process's peak in a child started from it.
    ballast = np.ones(256 * 2**20 // 8)  # keep this process's peak well above a bare interpreter's
    parent = peak_rss_mb()
    (child,) = _child("from recsys.models.base import peak_rss_mb; print(peak_rss_mb())")
    assert ballast[0] == 1.0 and child < parent - 50
