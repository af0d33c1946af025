"""`recsys bench samplers`: how fast each sampler draws, and what it adds to a training step.

Two tables:

- *Throughput*: negatives per second of the plain samplers, drawing ``[2048, 1024]`` per call on the
  dataset's training interactions (median of several calls after a warm-up).
- *Step cost*: ``recsys fit`` of MF at the config's batch size with each sampler for a few epochs, in
  its own process: median ``time/epoch_train_s`` (Lightning included), its ratio to the uniform
  sampler's (the same number of steps per epoch), and ``time/sampling_s``.
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from recsys.bench.runs import machine_line, markdown_table, timed_fit
from recsys.errors import UserError

__all__ = ["DEFAULT_CONFIGS", "STEP_VARIANTS", "run_sampler_benchmark"]

DEFAULT_CONFIGS = ("configs/ml-100k/mf_bpr.yaml", "configs/gowalla/mf_bpr.yaml")

# (label, overrides of the config's sampler/loss) for the step-cost table; the first is the baseline.
STEP_VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("uniform (config's)", ()),
    ("popularity alpha 0.75", ("sampler.name=popularity", "sampler.alpha=0.75")),
    ("in_batch, all B-1", ("sampler.name=in_batch",)),
    ("topk k=1 of 64 (pool blocks, the default)", ("sampler.name=topk",)),
    ("topk k=1 of 64, random pool windows",
     ("sampler.name=topk", "sampler.base={name: uniform, exclude_positives: true, pool: 256}")),
    ("topk k=1 of 64, per-query candidates",
     ("sampler.name=topk", "sampler.base={name: uniform, exclude_positives: true}")),
    ("topk k=1 of 64, one candidate set per batch",
     ("sampler.name=topk", "sampler.base={name: uniform, shared: true, exclude_positives: true}")),
    ("ambiguous 1 of 64 (pool blocks, the default)", ("sampler.name=ambiguous",)),
    ("noisy_label_robust + nbpo", ("sampler.name=noisy_label_robust", "loss.name=nbpo")),
    ("mnar + relmf", ("sampler.name=mnar", "loss.name=relmf")),
)

_THROUGHPUT_SHAPE = (2048, 1024)


def _throughput(config: Path, data_root: Path, cache_dir: Path | None) -> list[tuple[str, ...]]:
    from recsys.config import load_config
    from recsys.data.loading import load_split
    from recsys.samplers import SAMPLERS

    base = load_config(config)
    split = load_split(base.data, data_root, base.seed, cache_dir)
    batch, per_query = _THROUGHPUT_SHAPE
    generator = torch.Generator().manual_seed(0)
    rows = []
    for label, overrides in (
        ("uniform", ["sampler.name=uniform", "sampler.exclude_positives=false"]),
        ("uniform, excluding positives", ["sampler.name=uniform", "sampler.exclude_positives=true"]),
        ("popularity alpha 0.75", ["sampler.name=popularity", "sampler.exclude_positives=false"]),
        ("popularity alpha 0.75, excluding positives", ["sampler.name=popularity", "sampler.exclude_positives=true"]),
    ):
        section = load_config(config, [*overrides, f"sampler.n_negatives={per_query}"]).sampler
        sampler = SAMPLERS.build(section, split.train, base.seed)
        pick = torch.randint(len(split.train), (batch,), generator=generator)
        queries = torch.from_numpy(split.train.users.astype(np.int64))[pick]
        positives = torch.from_numpy(split.train.items.astype(np.int64))[pick]
        draw = partial(sampler, queries, positives, None)
        for _ in range(3):
            draw()
        seconds = []
        for _ in range(7):
            started = time.perf_counter()
            draw()
            seconds.append(time.perf_counter() - started)
        rate = batch * per_query / statistics.median(seconds)
        rows.append((base.data.name, label, f"{rate / 1e6:.1f}"))
    return rows


def run_sampler_benchmark(configs: list[Path], epochs: int, data_root: Path, cache_dir: Path | None) -> str:
    """Both tables for every config (an MF config with a uniform sampler), as Markdown."""
    for config in configs:
        if not config.is_file():
            raise UserError(f"{config}: no such config file")
    throughput = [row for config in configs for row in _throughput(config, data_root, cache_dir)]
    steps = []
    for config in configs:
        baseline = None
        for label, overrides in STEP_VARIANTS:
            run = timed_fit(config, list(overrides), epochs, data_root, cache_dir, label)
            seconds = run.median("time/epoch_train_s")
            baseline = baseline or seconds
            steps.append((
                run.tags.get("dataset", "?"), label, f"{seconds:.4f}", f"{seconds / baseline:.2f}",
                f"{run.median('time/sampling_s'):.4f}",
            ))
    return "\n\n".join([
        machine_line(),
        f"Throughput, [{_THROUGHPUT_SHAPE[0]}, {_THROUGHPUT_SHAPE[1]}] negatives per call:",
        markdown_table(("dataset", "sampler", "M negatives/s"), throughput),
        f"Step cost, MF at the config's batch size, median of {epochs} epochs:",
        markdown_table(("dataset", "sampler", "train s/epoch", "x uniform", "sampling s/epoch"), steps),
    ])
