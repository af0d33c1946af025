"""Learning curves read back from tracked runs: ``recsys curves`` (a table, a CSV, one PNG).

A run logs its per-epoch metrics at step = epoch (``val/*``, ``train/loss``, a refit's ``refit/train/*``
and ``refit/test/*``). This reads those histories for one or more runs and draws one panel per metric,
one line per run, so that runs (samplers, losses, a long refit against its paper's figure) are compared
by looking rather than by reading numbers off MLflow's pages.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import DataError, UserError
from recsys.tracking.run import local_store_path, mlflow_key, tracking_client

__all__ = ["Curve", "default_metrics", "draw_curves", "read_curves", "summary_table", "write_csv"]


@dataclass(frozen=True)
class Curve:
    """One metric of one run by epoch: ``steps[t]`` (ascending, unique) and ``values[t]``."""

    run_id: str
    run_name: str
    metric: str  # as logged (``val/recall_at_20``)
    steps: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def label(self) -> str:
        return f"{self.run_name} ({self.run_id[:8]})"

    def best(self, higher_is_better: bool = True) -> tuple[int, float]:
        """The (step, value) of the best finite value; ties go to the earliest step."""
        points = [(s, v) for s, v in zip(self.steps, self.values, strict=True) if math.isfinite(v)]
        if not points:
            return self.steps[-1], self.values[-1]
        sign = 1.0 if higher_is_better else -1.0
        return max(points, key=lambda point: (sign * point[1], -point[0]))

def default_metrics(params: dict[str, str], logged: Sequence[str]) -> list[str]:
    """The run's ``train.monitor`` (``val/ndcg@20`` -> ``val/ndcg_at_20``) and the same metric's refit
    test curve (``refit/test/ndcg_at_20``), those of them the run logged."""
    monitor = mlflow_key(params.get("train.monitor", "val/ndcg@20"))
    candidates = [monitor, "refit/test/" + monitor.removeprefix("val/")]
    return [key for key in candidates if key in logged]


def read_curves(tracking_uri: str, run_ids: Sequence[str], metrics: Sequence[str]) -> list[Curve]:
    """The histories of ``metrics`` (``@`` or ``_at_`` spelling; empty: ``default_metrics`` of each run)
    of every run, run by run. A step logged twice (a resumed fit redoes its interrupted epoch) keeps
    its last value.

    Raises:
        DataError: no such store or run, or a metric the run has no history of.
    """
    store = local_store_path(tracking_uri)
    if store is not None and not store.is_file():
        raise DataError(f"{store}: no tracking store (pass --tracking-uri)")
    from mlflow.exceptions import MlflowException

    client = tracking_client(tracking_uri)
    curves = []
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise DataError(f"{tracking_uri}: no run {run_id!r}") from None
        logged = sorted(run.data.metrics)
        keys = [mlflow_key(name) for name in metrics] or default_metrics(run.data.params, logged)
        if not keys:
            raise UserError(f"run {run_id}: neither its monitor nor a refit test curve is logged; name --metric "
                            f"(logged: {', '.join(logged) or 'nothing'})")
        for key in keys:
            history = client.get_metric_history(run_id, key)
            if not history:
                raise DataError(f"run {run_id}: no metric {key!r} (logged: {', '.join(logged) or 'nothing'})")
            by_step = {entry.step: entry.value for entry in sorted(history, key=lambda e: (e.step, e.timestamp))}
            steps = tuple(sorted(by_step))
            curves.append(Curve(run_id, run.info.run_name or run_id, key, steps, tuple(by_step[s] for s in steps)))
    return curves


def _lower_is_better(metric: str) -> bool:
    return "loss" in metric or metric.startswith(("time/", "sys/", "refit/time/"))


def summary_table(curves: Sequence[Curve]) -> str:
    """One row per curve: points, the last (epoch, value) and the best (the lowest for losses and times)."""
    rows = [("run", "metric", "points", "last epoch", "last", "best epoch", "best")]
    for curve in curves:
        best_step, best_value = curve.best(higher_is_better=not _lower_is_better(curve.metric))
        rows.append((curve.label, curve.metric, str(len(curve.steps)), str(curve.steps[-1]),
                     f"{curve.values[-1]:.4f}", str(best_step), f"{best_value:.4f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _replace_atomically(path: Path, write) -> None:
    """Write through a temporary file beside ``path`` and rename it over: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_csv(path: Path, curves: Sequence[Curve]) -> None:
    """Long format: ``run_id, run_name, metric, epoch, value``, one row per point."""

    def write(target: Path) -> None:
        with target.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["run_id", "run_name", "metric", "epoch", "value"])
            for curve in curves:
                for step, value in zip(curve.steps, curve.values, strict=True):
                    writer.writerow([curve.run_id, curve.run_name, curve.metric, step, repr(value)])

    _replace_atomically(path, write)


def draw_curves(path: Path, curves: Sequence[Curve], references: dict[str, float] | None = None,
                reference_label: str = "reference", title: str = "") -> None:
    """One panel per metric (in first-seen order), one line per run; ``references`` (metric as logged
    -> value: a paper's figure, say) are dashed horizontal lines on their metrics' panels.

    Raises:
        UserError: a reference for a metric that has no panel.
    """
    metrics = list(dict.fromkeys(curve.metric for curve in curves))
    references = {mlflow_key(key): value for key, value in (references or {}).items()}
    for key in references:
        if key not in metrics:
            raise UserError(f"--reference {key!r}: not a plotted metric ({', '.join(metrics)})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.0), squeeze=False,
                                layout="constrained")
    for panel, metric in zip(axes[0], metrics, strict=True):
        for curve in (c for c in curves if c.metric == metric):
            marker = "o" if len(curve.steps) <= 60 else None
            panel.plot(curve.steps, curve.values, marker=marker, markersize=3, label=curve.label)
        if metric in references:
            panel.axhline(references[metric], linestyle="--", linewidth=1, color="black",
                          label=f"{reference_label} ({references[metric]:g})")
        panel.set_xlabel("epoch")
        panel.set_title(metric)
        panel.grid(alpha=0.3)
        panel.legend(fontsize="small")
    if title:
        figure.suptitle(title)

    def write(target: Path) -> None:
        figure.savefig(target, dpi=110, format="png")

    try:
        _replace_atomically(path, write)
    finally:
        plt.close(figure)
