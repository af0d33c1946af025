"""`sys/peak_rss_mb` is this process's own peak, not its parent's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from recsys.models.base import peak_rss_mb


def test_peak_rss_grows_with_a_touched_allocation() -> None:
    before = peak_rss_mb()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page written
    assert peak_rss_mb() >= before + 60 * (block[-1] == 1.0)


def test_a_child_process_does_not_inherit_the_parents_peak() -> None:
    # Linux's ru_maxrss would report at least this process's peak in a child started from it.
    parent = peak_rss_mb()
    ballast = np.ones(256 * 2**20 // 8)  # keep this process's peak well above a bare interpreter's
    code = "from recsys.models.base import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert ballast[0] == 1.0 and child < max(parent, 256) - 50
