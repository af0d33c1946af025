"""`recsys bench speed`: the cost of training and evaluating, measured by the real `recsys fit`.

Each config runs in its own process (so peak RSS is that config's own) for a fixed number of epochs,
tracked in a throw-away MLflow store; the figures are read back from the run's logged metrics:
``time/epoch_train_s`` (median over epochs, and its range), ``time/eval_s`` (validation, median),
``time/test_eval_s`` (one full-ranking pass over every test user), and the peak of ``sys/peak_rss_mb``.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from recsys.errors import UserError

__all__ = ["DEFAULT_CONFIGS", "run_speed_benchmark"]

DEFAULT_CONFIGS = ("configs/ml-100k/mf_bpr.yaml", "configs/gowalla/mf_bpr.yaml")


def cpu_probe_ms(repeats: int = 5) -> float:
    """Median milliseconds of a fixed workload shaped like an MF step (many small tensor ops).

    Printed beside the results so that runs on a slower host (a busy or throttled VM) can be told apart
    from slower code.
    """
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(2048, 2, 64, generator=generator)
    right = torch.randn(2048, 1, 64, generator=generator)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(200):
            (left * right).sum(dim=2).softmax(dim=1).mean()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def run_speed_benchmark(configs: list[Path], epochs: int, data_root: Path, cache_dir: Path | None) -> str:
    """Run every config for ``epochs`` epochs and return a Markdown table of its costs."""
    from mlflow.tracking import MlflowClient

    for config in configs:
        if not config.is_file():
            raise UserError(f"{config}: no such config file")
    rows = []
    for config in configs:
        with tempfile.TemporaryDirectory(prefix="recsys-bench-") as store:
            uri = f"sqlite:///{store}/mlflow.db"
            command = [
                sys.executable, "-m", "recsys.cli", "fit", "-c", str(config), "--data-root", str(data_root),
                "--tracking-uri", uri, "--no-progress", f"train.max_epochs={epochs}",
                f"train.patience={epochs + 1}", "tracking.log_checkpoint=false", "tracking.experiment=bench",
            ]
            if cache_dir is not None:
                command += ["--cache-dir", str(cache_dir)]
            print(f"bench speed: {config} for {epochs} epochs ...", file=sys.stderr, flush=True)
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
            client = MlflowClient(uri)
            run = client.search_runs([client.get_experiment_by_name("bench").experiment_id])[0]

            def history(key: str) -> list[float]:
                return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]

            train = history("time/epoch_train_s")
            rows.append(
                (
                    str(config),
                    run.data.tags.get("dataset", "?"),
                    f"{int(run.data.tags['data.train_interactions']):,}",
                    f"{int(run.data.tags['data.test_users']):,} x {int(run.data.tags['data.n_items']):,}",
                    str(len(train)),
                    f"{statistics.median(train):.4f} ({min(train):.4f}-{max(train):.4f})",
                    f"{statistics.median(history('time/eval_s')):.3f}",
                    f"{history('time/test_eval_s')[-1]:.3f}",
                    f"{max(history('sys/peak_rss_mb')):.0f}",
                )
            )
    header = ("config", "dataset", "train pairs", "test users x items", "epochs", "train s/epoch median (min-max)",
              "val eval s (median)", "test eval s", "peak RSS MiB")
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}; "
        f"CPU probe {cpu_probe_ms():.1f} ms (a fixed small-op workload; lower is a faster host)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)
