"""Timed `recsys fit` runs in their own processes, read back from a throw-away MLflow store."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["FitFigures", "cpu_probe_ms", "machine_line", "markdown_table", "timed_fit"]


@dataclass
class FitFigures:
    """Per-epoch histories (``metric -> values by epoch``), final metrics and tags of one run."""

    history: dict[str, list[float]]
    metrics: dict[str, float]
    tags: dict[str, str]

    def median(self, key: str) -> float:
        return statistics.median(self.history[key])


def timed_fit(
    config: Path, overrides: list[str], epochs: int, data_root: Path, cache_dir: Path | None, label: str = ""
) -> FitFigures:
    """``recsys fit`` of ``config`` with ``overrides`` for exactly ``epochs`` epochs, in a subprocess."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as store:
        uri = f"sqlite:///{store}/mlflow.db"
        command = [
            sys.executable, "-m", "recsys.cli", "fit", "-c", str(config), "--data-root", str(data_root),
            "--tracking-uri", uri, "--no-progress", f"train.max_epochs={epochs}", f"train.patience={epochs + 1}",
            "tracking.log_checkpoint=false", "tracking.experiment=bench", *overrides,
        ]
        if cache_dir is not None:
            command += ["--cache-dir", str(cache_dir)]
        print(f"bench: {config} {' '.join(overrides)} {label}".rstrip() + f" for {epochs} epochs ...",
              file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
        client = MlflowClient(uri)
        run = client.search_runs([client.get_experiment_by_name("bench").experiment_id])[0]
        history = {
            key: [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
            for key in run.data.metrics
        }
        return FitFigures(history=history, metrics=dict(run.data.metrics), tags=dict(run.data.tags))


def median_ms(function: Callable[[], object], repeats: int = 10, device: torch.device | str = "cpu") -> float:
    """Median milliseconds of ``repeats`` calls of ``function``, after one call to warm up. On a CUDA
    ``device`` each call is timed to the end of its last kernel (the device is synchronised)."""
    cuda = torch.device(device).type == "cuda"

    def call() -> None:
        function()
        if cuda:
            torch.cuda.synchronize(device)

    call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1e3


def cpu_probe_ms(repeats: int = 5) -> float:
    """Median milliseconds of a fixed workload shaped like an MF step (many small tensor ops), printed
    beside results to compare hosts."""
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


def machine_line() -> str:
    return (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}; "
        f"CPU probe {cpu_probe_ms():.1f} ms"
    )


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    return "\n".join([
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ])
