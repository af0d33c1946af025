"""The tables of a benchmark grid: what each finished cell measured -> one row per group, paired tests.

A *group* is one combination of the grid's axis labels; its cells are its seeds. A group's row holds,
per reported metric, the mean over its seeds with the 95% Student-t interval, and its cost: the median
``time/epoch_train_s`` over every epoch of its runs, the mean epochs run and the summed wall time.

Each group that is not a baseline is tested against its baseline group on per-user test metrics: the
two groups' users are paired within each seed both finished (a seed fixes the split, so the same user
has the same test items in both), each user's values are averaged over those seeds, and the two vectors
go to a paired t-test and a Wilcoxon signed-rank test. Holm's correction runs over the comparisons of
one metric and one test (the family a reader scans in one column).
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.evaluation.significance import Interval, PairedTest, confidence_interval, holm, paired_tests

__all__ = ["ALPHA", "CellRecord", "Comparison", "GroupRow", "compare", "markdown", "summarise", "write_tables"]

ALPHA = 0.05

Group = tuple[str, ...]  # one label per axis


@dataclass(frozen=True)
class CellRecord:
    """What one finished cell (a group at one seed) measured, as read back from its MLflow run.

    Attributes:
        metrics: test means by metric name (``"recall@20"``).
        epoch_train_s: ``time/epoch_train_s`` of every epoch.
        diagnostics: sampler diagnostics (``"hardness"`` for ``sampler/hardness``) -> epoch -> value.
        per_user: one row per test query (a user; a predicted event for sessions): ``query`` and one
            column per metric.
    """

    group: Group
    seed: int
    run_id: str
    metrics: dict[str, float]
    epochs: int
    wall_s: float
    epoch_train_s: list[float]
    diagnostics: dict[str, dict[int, float]]
    per_user: pl.DataFrame


@dataclass(frozen=True)
class GroupRow:
    """One row of the results table: a group's seeds, metric intervals and cost."""

    group: Group
    seeds: tuple[int, ...]
    intervals: dict[str, Interval]
    seconds_per_epoch: float
    epochs: float
    total_s: float


@dataclass(frozen=True)
class Comparison:
    """A group against its baseline on one metric, with Holm-adjusted p-values and decisions."""

    group: Group
    baseline: Group
    metric: str
    test: PairedTest
    t_holm: float
    t_significant: bool
    wilcoxon_holm: float
    wilcoxon_significant: bool


def summarise(records: Sequence[CellRecord], groups: Sequence[Group], metrics: Sequence[str]) -> list[GroupRow]:
    """One row per group (in ``groups``' order) that has at least one finished cell."""
    rows = []
    for group in groups:
        cells = [record for record in records if record.group == group]
        if not cells:
            continue
        epoch_seconds = [seconds for cell in cells for seconds in cell.epoch_train_s]
        rows.append(GroupRow(
            group=group,
            seeds=tuple(cell.seed for cell in cells),
            intervals={name: confidence_interval([cell.metrics[name] for cell in cells]) for name in metrics},
            seconds_per_epoch=statistics.median(epoch_seconds) if epoch_seconds else float("nan"),
            epochs=float(np.mean([cell.epochs for cell in cells])),
            total_s=float(sum(cell.wall_s for cell in cells)),
        ))
    return rows


def compare(
    records: Sequence[CellRecord], baselines: dict[Group, Group], metrics: Sequence[str], alpha: float = ALPHA
) -> list[Comparison]:
    """Every group with finished cells against its baseline (``baselines[group]``, when it differs and
    has finished cells too), per metric; Holm-corrected per metric and test."""
    tests: list[tuple[Group, Group, str, PairedTest]] = []
    for group, baseline in baselines.items():
        if group == baseline:
            continue
        treated, control = _per_user(records, group), _per_user(records, baseline)
        if treated is None or control is None:
            continue
        paired = treated.join(control, on=["query", "seed"], suffix="#baseline")
        by_user = paired.group_by("query").agg(pl.exclude("seed").mean()).sort("query")
        for name in metrics:
            tests.append((group, baseline, name, paired_tests(by_user[name].to_numpy(),
                                                              by_user[f"{name}#baseline"].to_numpy())))
    comparisons = []
    for name in metrics:
        family = [entry for entry in tests if entry[2] == name]
        t_holm, t_significant = holm([entry[3].t_p for entry in family], alpha)
        w_holm, w_significant = holm([entry[3].wilcoxon_p for entry in family], alpha)
        for index, (group, baseline, _, test) in enumerate(family):
            comparisons.append(Comparison(group, baseline, name, test, t_holm[index], t_significant[index],
                                          w_holm[index], w_significant[index]))
    return comparisons


def _per_user(records: Sequence[CellRecord], group: Group) -> pl.DataFrame | None:
    frames = [record.per_user.with_columns(pl.lit(record.seed).alias("seed"))
              for record in records if record.group == group]
    return pl.concat(frames) if frames else None


def markdown(axes: Sequence[str], rows: Sequence[GroupRow], comparisons: Sequence[Comparison],
             metrics: Sequence[str], baselines: dict[Group, Group], alpha: float = ALPHA) -> str:
    """The results table and the table of tests, in Markdown."""
    is_baseline = {baseline for baseline in baselines.values()}
    header = (*axes, "seeds", *metrics, "s/epoch", "epochs", "total s")
    lines = [_row(header), _rule(len(header))]
    for row in rows:
        labels = list(row.group)
        if row.group in is_baseline:
            labels[-1] += " (baseline)"
        cells = [_interval(row.intervals[name]) for name in metrics]
        lines.append(_row((*labels, str(len(row.seeds)), *cells, f"{row.seconds_per_epoch:.4f}",
                           f"{row.epochs:.1f}", f"{row.total_s:.1f}")))
    table = "\n".join(lines)
    text = [
        "Mean ± half-width of the 95% Student-t interval over seeds. *s/epoch*: median `time/epoch_train_s` "
        "over every epoch of the group's runs; *epochs*: mean epochs run; *total s*: wall time of the group's "
        "runs.",
        table,
    ]
    if comparisons:
        n = len({(comparison.group, comparison.baseline) for comparison in comparisons})
        header = (*axes, "baseline", "metric", "users", "difference", "t-test p", "Holm p", "Wilcoxon p", "Holm p",
                  f"significant at {alpha:g}")
        lines = [_row(header), _rule(len(header))]
        for comparison in comparisons:
            lines.append(_row((
                *comparison.group, " / ".join(comparison.baseline), comparison.metric, str(comparison.test.n),
                f"{comparison.test.mean_difference:+.4f}", _p(comparison.test.t_p), _p(comparison.t_holm),
                _p(comparison.test.wilcoxon_p), _p(comparison.wilcoxon_holm), _decision(comparison),
            )))
        text += [
            "Paired per-user tests against the baseline: each user's test metric averaged over the seeds both "
            "groups finished; two-sided paired t-test (`scipy.stats.ttest_rel`) and Wilcoxon signed-rank test "
            f"(`scipy.stats.wilcoxon`); Holm's correction per metric and test over the {n} comparisons; "
            f"*difference*: mean of group - baseline over users.",
            "\n".join(lines),
        ]
    return "\n\n".join(text)


def write_tables(out: Path, axes: Sequence[str], rows: Sequence[GroupRow], comparisons: Sequence[Comparison],
                 records: Sequence[CellRecord], metrics: Sequence[str]) -> list[Path]:
    """``results.csv`` (one row per group), ``significance.csv`` (one row per test) and ``cells.csv``
    (one row per finished cell) in ``out``."""
    results = [
        {
            **dict(zip(axes, row.group, strict=True)),
            "seeds": len(row.seeds),
            **{f"{name}_{part}": getattr(row.intervals[name], part) for name in metrics for part in ("mean", "low", "high")},
            "s_per_epoch": row.seconds_per_epoch,
            "epochs": row.epochs,
            "total_s": row.total_s,
        }
        for row in rows
    ]
    significance = [
        {
            **dict(zip(axes, comparison.group, strict=True)),
            "baseline": " / ".join(comparison.baseline),
            "metric": comparison.metric,
            "users": comparison.test.n,
            "mean_difference": comparison.test.mean_difference,
            "t_p": comparison.test.t_p,
            "t_p_holm": comparison.t_holm,
            "t_significant": comparison.t_significant,
            "wilcoxon_p": comparison.test.wilcoxon_p,
            "wilcoxon_p_holm": comparison.wilcoxon_holm,
            "wilcoxon_significant": comparison.wilcoxon_significant,
        }
        for comparison in comparisons
    ]
    cells = [
        {
            **dict(zip(axes, record.group, strict=True)),
            "seed": record.seed,
            "run_id": record.run_id,
            **{name: record.metrics[name] for name in metrics},
            "epochs": record.epochs,
            "s_per_epoch": statistics.median(record.epoch_train_s) if record.epoch_train_s else float("nan"),
            "wall_s": record.wall_s,
        }
        for record in records
    ]
    written = []
    for name, table in (("results.csv", results), ("significance.csv", significance), ("cells.csv", cells)):
        path = out / name
        with path.open("w", newline="") as handle:
            if table:
                writer = csv.DictWriter(handle, fieldnames=list(table[0]))
                writer.writeheader()
                writer.writerows(table)
        written.append(path)
    return written


def _interval(interval: Interval) -> str:
    if interval.n < 2:
        return f"{interval.mean:.4f}"
    return f"{interval.mean:.4f} ± {interval.half_width:.4f}"


def _p(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.2g}"


def _decision(comparison: Comparison) -> str:
    if comparison.t_significant and comparison.wilcoxon_significant:
        return "both"
    if comparison.t_significant:
        return "t-test only"
    if comparison.wilcoxon_significant:
        return "Wilcoxon only"
    return "no"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _rule(n: int) -> str:
    return "|" + "|".join("---" for _ in range(n)) + "|"
