"""Significance of differences between runs: intervals over seeds, paired per-user tests, Holm.

- ``confidence_interval``: the mean of a group's seeds with its Student-t interval (``n - 1`` degrees
  of freedom), the interval a paper reports for a handful of seeds.
- ``paired_tests``: a group against its baseline on the same users, by a paired t-test and a Wilcoxon
  signed-rank test (``scipy.stats.ttest_rel``, ``scipy.stats.wilcoxon``).
- ``holm``: Holm's step-down correction of a family of p-values (Holm, Scand. J. Statist. 1979), as
  adjusted p-values and the decisions at a level.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Interval", "PairedTest", "confidence_interval", "holm", "paired_tests"]


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its confidence interval (``low``, ``high``; NaN for one value)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def confidence_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` with its Student-t ``confidence`` interval.

    ``mean +- t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)`` with ``s`` the sample standard deviation;
    an interval needs two values (one value gives NaN bounds).
    """
    sample = np.asarray(values, dtype=np.float64)
    if sample.size == 0:
        raise ValueError("a confidence interval needs at least one value")
    mean = float(sample.mean())
    if sample.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, sample.size - 1) * sample.std(ddof=1) / math.sqrt(sample.size))
    return Interval(mean, mean - half, mean + half, int(sample.size))


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison over ``n`` users: the mean of ``treatment - baseline`` and two p-values."""

    n: int
    mean_difference: float
    t_p: float
    wilcoxon_p: float


def paired_tests(treatment: np.ndarray, baseline: np.ndarray) -> PairedTest:
    """Two-sided paired t-test and Wilcoxon signed-rank test of ``treatment`` against ``baseline``.

    Args:
        treatment: ``[n]`` one value per user.
        baseline: ``[n]`` the same users' values under the baseline, in the same order.

    Identical vectors give p = 1 (scipy would return NaN or refuse); fewer than two users give NaN.
    """
    treatment, baseline = np.asarray(treatment, np.float64), np.asarray(baseline, np.float64)
    if treatment.shape != baseline.shape or treatment.ndim != 1:
        raise ValueError(f"paired vectors must have one shape [n], got {treatment.shape} and {baseline.shape}")
    difference = treatment - baseline
    n = int(difference.size)
    mean_difference = float(difference.mean()) if n else math.nan
    if n < 2:
        return PairedTest(n, mean_difference, math.nan, math.nan)
    if not np.any(difference):
        return PairedTest(n, mean_difference, 1.0, 1.0)
    with warnings.catch_warnings():  # scipy's notes on ties and on normal approximations
        warnings.simplefilter("ignore")
        t_p = float(stats.ttest_rel(treatment, baseline).pvalue)
        wilcoxon_p = float(stats.wilcoxon(treatment, baseline).pvalue)
    return PairedTest(n, mean_difference, t_p, wilcoxon_p)


def holm(p_values: Sequence[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm's correction of one family of p-values: adjusted p-values and which hypotheses are rejected.

    The ``i``-th smallest of ``m`` p-values is adjusted to ``max_{j <= i} min(1, (m - j + 1) p_(j))``
    and rejected when that is at most ``alpha`` (the step-down procedure: stop at the first p_(i) above
    ``alpha / (m - i + 1)``). NaN p-values (a test that could not be run) are left out of the family
    and stay NaN, not rejected.
    """
    values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(values.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    rejected = [bool(p <= alpha) for p in adjusted]  # NaN compares False
    return [float(p) for p in adjusted], rejected
