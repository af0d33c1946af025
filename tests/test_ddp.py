"""DDP on CPU (gloo): each process trains on its rows of every global batch, in-batch negatives are
gathered from every process, one MLflow run is tracked, and a 2-process fit matches a 1-process fit
(within the spread of seeds with uniform negatives; to 3e-3 with the same in-batch negatives)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mlflow.tracking import MlflowClient

from recsys.data.batching import ShuffledPairs, UserUniformPairs
from recsys.samplers.in_batch import InBatchSampler
from tests.factories import rows_interactions

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("source", [ShuffledPairs, UserUniformPairs])
def test_processes_split_every_global_batch_between_them(source: type[ShuffledPairs]) -> None:
    data = rows_interactions([[i % 7, (i + 3) % 7] for i in range(11)], n_items=7)  # 22 pairs
    whole = list(source(data, batch_size=8, seed=4))
    shards = []
    for rank in range(2):
        pairs = source(data, batch_size=8, seed=4)
        pairs.shard(rank, 2)
        shards.append(list(pairs))
    assert len(shards[0]) == len(shards[1]) == len(whole) == 3  # the last batch has 6 >= 2 rows
    for (users, items), (u0, i0), (u1, i1) in zip(whole, *shards, strict=True):
        assert len(u0) == len(u1) == len(users) // 2
        assert torch.equal(u0, users[0::2]) and torch.equal(i1, items[1::2])  # rows rank, rank + 2, ...
        assert sorted(zip(users.tolist(), items.tolist())) == sorted(zip([*u0.tolist(), *u1.tolist()], [*i0.tolist(), *i1.tolist()]))


def test_a_last_batch_smaller_than_the_world_is_dropped() -> None:
    data = rows_interactions([[0, 1, 2, 3, 4]], n_items=5)  # 5 pairs: batches of 4 and 1
    pairs = ShuffledPairs(data, batch_size=4, seed=0)
    pairs.shard(1, 2)
    assert len(pairs) == 1 and [len(users) for users, _ in pairs] == [2]


def _gather_worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        sampler = InBatchSampler(np.ones(20, dtype=np.int64), None, seed=1)
        positives = torch.tensor([[3, 4, 5], [10, 11]][rank])
        negatives = sampler(torch.zeros(len(positives), dtype=torch.long), positives, scorer=None)
        results[rank] = (negatives.items[0].tolist(), negatives.weight.tolist())
    finally:
        dist.destroy_process_group()


def test_in_batch_negatives_come_from_every_process(tmp_path: Path) -> None:
    results = mp.Manager().dict()
    mp.spawn(_gather_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    for rank in range(2):
        items, weight = results[rank]
        assert items == [3, 4, 5, 10, 11]
    # Each query's own positive, at its global position, has weight 0.
    assert results[0][1] == [[0, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 1, 0, 1, 1]]
    assert results[1][1] == [[1, 1, 1, 0, 1], [1, 1, 1, 1, 0]]


def _fit(tmp_path: Path, name: str, *overrides: str) -> dict[str, float]:
    store = tmp_path / f"{name}.db"
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "fit", "-c", str(ROOT / "configs" / "quickstart.yaml"),
         "--data-root", str(ROOT / "data"), "--tracking-uri", f"sqlite:///{store}", "--cache-dir",
         str(tmp_path / "cache"), "--no-progress", *overrides],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])  # one run
    return run.data.metrics


@pytest.mark.parametrize(
    ("pairing", "tolerance"),
    [
        # Uniform negatives: the processes draw other negatives than one process does, so the runs differ
        # as two seeds' negatives do (the quickstart's test NDCG@20 over seeds 1, 2 and 2020 spans
        # 0.282-0.303); measured: 0.0012 apart after early stopping.
        ([], 0.015),
        # All in-batch positives: the same negatives (gathered from both processes) and the same averaged
        # gradient as one process; measured: equal to 3e-4 after 5 epochs.
        pytest.param(["sampler.name=in_batch", "sampler.n_negatives=null", "sampler.exclude_positives=false",
                      "loss.name=sampled_softmax"], 0.003, marks=pytest.mark.slow),
    ],
    ids=["uniform", "in_batch"],
)
def test_two_process_ddp_matches_one_process(tmp_path: Path, pairing: list[str], tolerance: float) -> None:
    one = _fit(tmp_path, "one", *pairing, "train.max_epochs=5")
    two = _fit(tmp_path, "two", *pairing, "train.max_epochs=5", "train.strategy=ddp", "train.devices=2",
               "train.accelerator=cpu")
    for key in ("test/ndcg_at_20", "test/recall_at_20", "val/ndcg_at_20"):
        assert abs(two[key] - one[key]) <= tolerance, (key, one[key], two[key])
