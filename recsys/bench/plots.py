"""The plots of a benchmark grid (matplotlib, Agg backend), one PNG each.

- ``metric_bars.png``: one panel per reported metric, a bar per group with its 95% interval.
- ``sampler_diagnostics.png``: one panel per ``sampler/...`` diagnostic, a group's mean over its seeds
  at each validation epoch.
- ``accuracy_vs_compute.png``: the first reported metric (with its interval) against the mean wall
  time of a group's runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys.bench.results import CellRecord, GroupRow

__all__ = ["draw_plots"]


def draw_plots(out: Path, rows: Sequence[GroupRow], records: Sequence[CellRecord], metrics: Sequence[str]) -> list[Path]:
    """Draw every plot there is data for into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    if not rows:
        return []
    made = [_metric_bars(out / "metric_bars.png", rows, metrics)]
    diagnostics = out / "sampler_diagnostics.png"
    if _sampler_diagnostics(diagnostics, rows, records):
        made.append(diagnostics)
    made.append(_accuracy_vs_compute(out / "accuracy_vs_compute.png", rows, metrics[0]))
    return made


def _label(group: tuple[str, ...]) -> str:
    return " / ".join(group)


def _errors(rows: Sequence[GroupRow], metric: str) -> list[float]:
    """Interval half-widths (0 where one seed gives none)."""
    return [0.0 if math.isnan(row.intervals[metric].half_width) else row.intervals[metric].half_width for row in rows]


def _metric_bars(path: Path, rows: Sequence[GroupRow], metrics: Sequence[str]) -> Path:
    import matplotlib.pyplot as plt

    width = max(4.0, 0.6 * len(rows) + 1.5)
    figure, axes = plt.subplots(1, len(metrics), figsize=(width * len(metrics), 4.0), squeeze=False,
                                layout="constrained")
    positions = np.arange(len(rows))
    for panel, metric in zip(axes[0], metrics, strict=True):
        panel.bar(positions, [row.intervals[metric].mean for row in rows], yerr=_errors(rows, metric), capsize=4,
                  color="tab:blue", alpha=0.8)
        panel.set_xticks(positions, [_label(row.group) for row in rows], rotation=30, ha="right")
        panel.set_title(f"test {metric}")
        panel.grid(axis="y", alpha=0.3)
    figure.suptitle("mean over seeds, 95% t interval")
    return _save(figure, path)


def _sampler_diagnostics(path: Path, rows: Sequence[GroupRow], records: Sequence[CellRecord]) -> bool:
    import matplotlib.pyplot as plt

    names = sorted({name for record in records for name in record.diagnostics})
    if not names:
        return False
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False,
                             layout="constrained")
    for panel, name in zip(axes[0], names, strict=True):
        for row in rows:
            curves = [record.diagnostics.get(name, {}) for record in records if record.group == row.group]
            epochs = sorted({epoch for curve in curves for epoch in curve})
            if not epochs:
                continue
            means = [np.mean([curve[epoch] for curve in curves if epoch in curve]) for epoch in epochs]
            panel.plot(epochs, means, label=_label(row.group))
        panel.set_title(f"sampler/{name}")
        panel.set_xlabel("epoch")
        panel.grid(alpha=0.3)
    axes[0][-1].legend(fontsize="small")
    figure.suptitle("sampler diagnostics, mean over seeds")
    _save(figure, path)
    return True


def _accuracy_vs_compute(path: Path, rows: Sequence[GroupRow], metric: str) -> Path:
    import matplotlib.pyplot as plt

    figure, panel = plt.subplots(figsize=(6.0, 4.5), layout="constrained")
    seconds = [row.total_s / len(row.seeds) for row in rows]
    means = [row.intervals[metric].mean for row in rows]
    panel.errorbar(seconds, means, yerr=_errors(rows, metric), fmt="o", capsize=4)
    for row, x, y in zip(rows, seconds, means, strict=True):
        panel.annotate(_label(row.group), (x, y), textcoords="offset points", xytext=(5, 5), fontsize="small")
    panel.set_xlabel("wall seconds per run (mean over seeds)")
    panel.set_ylabel(f"test {metric}")
    panel.grid(alpha=0.3)
    panel.set_title("accuracy vs compute")
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
