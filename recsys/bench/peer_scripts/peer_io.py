"""What every peer script shares: its own peak memory and how it writes its result.

Imported by the peer scripts as a sibling module (``python SCRIPT`` puts the script's folder first on
``sys.path``), so it, like them, needs nothing but the standard library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """This process's own peak resident memory in MiB (Linux's VmHWM). Not ``ru_maxrss``: Linux carries
    the peak of the process that started this one across ``exec``, so that would count the benchmark's."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))


def write_result(result_path: str, result: dict[str, Any]) -> int:
    """Write ``result`` as JSON to ``result_path``; the script's exit code."""
    Path(result_path).write_text(json.dumps(result))
    return 0
