"""`recsys.allocator`: fixed glibc malloc thresholds keep a LightGCN step from faulting in fresh pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from recsys.allocator import tune_malloc

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")

# LightGCN steps on Gowalla-sized tables ([29,858 + 40,981] x 64 floats), on a random graph, in a fresh
# process: the minor page faults per step after a warm-up, and whether the thresholds were set.
_STEPS = textwrap.dedent("""
    import resource, sys
    from recsys.allocator import tune_malloc
    tuned = tune_malloc()
    import numpy as np, polars as pl, torch
    from recsys.data.interactions import Interactions
    from recsys.evaluation.evaluator import FullRankingEvaluator
    from recsys.losses import bpr_loss
    from recsys.models.base import TrainingParts
    from recsys.models.lightgcn import LightGCN, LightGCNConfig
    from recsys.models.optimizers import build_optimizer
    from recsys.samplers.uniform import UniformSampler
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_users, n_items, n = 29858, 40981, 200000
    train = Interactions(users=rng.integers(0, n_users, n).astype(np.int32),
                         items=rng.integers(0, n_items, n).astype(np.int32), n_users=n_users, n_items=n_items,
                         user_ids=pl.Series(np.arange(n_users).astype(str)),
                         item_ids=pl.Series(np.arange(n_items).astype(str)))
    parts = TrainingParts(n_users=n_users, n_items=n_items, sampler=UniformSampler(n_items, n_negatives=1),
                          loss=bpr_loss, evaluator=FullRankingEvaluator((20,)), train=train)
    model = LightGCN(LightGCNConfig(), parts)
    optimizer = build_optimizer("adam", model.parameters(), 1e-3, 0.0)
    def step():
        batch = torch.randint(0, n, (2048,))
        loss = model.training_loss((torch.from_numpy(train.users[batch.numpy()]).long(),
                                    torch.from_numpy(train.items[batch.numpy()]).long()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


def _faults_per_step(**environment: str) -> tuple[bool, float]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run([sys.executable, "-c", _STEPS], capture_output=True, text=True, timeout=300,
                          env={**env, **environment}, check=True)
    tuned, faults = done.stdout.split()
    return tuned == "True", float(faults)


@glibc
def test_tuned_malloc_reuses_freed_tables_instead_of_faulting_in_new_pages() -> None:
    tuned, faults = _faults_per_step()
    untuned, untuned_faults = _faults_per_step(RECSYS_MALLOC_TUNING="0")
    assert tuned and not untuned
    # One [40,981 x 64] float table is 2,561 pages of 4 KiB: glibc's adaptive thresholds fault in several
    # tables' worth every step; fixed ones reuse the freed blocks.
    assert untuned_faults > 2561
    assert faults < untuned_faults / 10


@glibc
def test_the_users_own_malloc_settings_win(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert not tune_malloc()
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("RECSYS_MALLOC_TUNING", "0")
    assert not tune_malloc()
