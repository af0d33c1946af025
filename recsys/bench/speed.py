"""`recsys bench speed`: the cost of training and evaluating, measured by the real `recsys fit`.

Each config runs in its own process (so peak RSS is that config's own) for a fixed number of epochs;
the figures are the run's logged metrics: ``time/epoch_train_s`` (median over epochs, and its range),
``time/eval_s`` (validation, median), ``time/test_eval_s`` (one full-ranking pass over every test
user), and the peak of ``sys/peak_rss_mb``.
"""

from __future__ import annotations

from pathlib import Path

from recsys.bench.runs import machine_line, markdown_table, timed_fit
from recsys.errors import UserError

__all__ = ["DEFAULT_CONFIGS", "run_speed_benchmark"]

DEFAULT_CONFIGS = ("configs/ml-100k/mf_bpr.yaml", "configs/gowalla/mf_bpr.yaml")


def run_speed_benchmark(
    configs: list[Path], epochs: int, data_root: Path, cache_dir: Path | None, overrides: list[str] | None = None
) -> str:
    """Run every config (with ``overrides``) for ``epochs`` epochs and return a Markdown table of its costs."""
    for config in configs:
        if not config.is_file():
            raise UserError(f"{config}: no such config file")
    rows = []
    for config in configs:
        run = timed_fit(config, list(overrides or []), epochs, data_root, cache_dir)
        train = run.history["time/epoch_train_s"]
        rows.append((
            str(config),
            run.tags.get("dataset", "?"),
            *_sizes(run.tags),
            str(len(train)),
            f"{run.median('time/epoch_train_s'):.4f} ({min(train):.4f}-{max(train):.4f})",
            f"{run.median('time/eval_s'):.3f}",
            f"{run.history['time/test_eval_s'][-1]:.3f}",
            f"{max(run.history['sys/peak_rss_mb']):.0f}",
        ))
    header = ("config", "dataset", "train pairs", "test users x items", "epochs", "train s/epoch median (min-max)",
              "val eval s (median)", "test eval s", "peak RSS MiB")
    applied = f"\n\nOverrides: `{' '.join(overrides)}`" if overrides else ""
    return machine_line() + applied + "\n\n" + markdown_table(header, rows)


def _sizes(tags: dict[str, str]) -> tuple[str, str]:
    """Training size and the test ranking's shape, from a run's data tags (pairs and users, or events
    and sessions for session data)."""
    items = int(tags["data.n_items"])
    if "data.train_sessions" in tags:
        return f"{int(tags['data.train_events']):,} events", f"{int(tags['data.test_sessions']):,} sessions x {items:,}"
    return f"{int(tags['data.train_interactions']):,}", f"{int(tags['data.test_users']):,} x {items:,}"
