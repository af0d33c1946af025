"""Pooled uniform draws: each query takes a random window of one per-batch pool; candidate scoring
reads the pool once."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from factories import rows_csr, rows_interactions

from recsys.config import resolve_config
from recsys.errors import ConfigError
from recsys.evaluation.evaluator import FullRankingEvaluator
from recsys.losses import bpr_loss
from recsys.models.base import TrainingParts
from recsys.models.mf import MatrixFactorization, MFConfig
from recsys.samplers import SAMPLERS
from recsys.samplers.base import BoundScorer
from recsys.samplers.pool import block_rows, blocks
from recsys.samplers.topk import TopKSampler, candidate_scores
from recsys.samplers.uniform import UniformConfig, UniformSampler

ROWS = [[0, 1, 2], [3], [], [4, 5, 6, 7, 8, 9]]


def _draw(sampler, users: list[int]):
    queries = torch.tensor(users)
    return sampler(queries, torch.zeros_like(queries), scorer=None)


def test_each_query_gets_a_window_of_the_pool() -> None:
    sampler = UniformSampler(50, 6, seed=3, pool=20)
    negatives = _draw(sampler, [0, 1, 2, 3, 0, 1])
    pool, index = negatives.extras["pool"], negatives.extras["pool_index"]
    assert pool.shape == (20,) and index.shape == (6, 6)
    assert torch.equal(negatives.items, pool[index])
    assert bool((index.diff(dim=1) == 1).all())  # consecutive entries
    assert bool(((index >= 0) & (index < 20)).all())
    assert not negatives.shared and negatives.unit_weights
    torch.testing.assert_close(negatives.log_q, torch.full((6, 6), -np.log(50), dtype=torch.float32))


def test_pooled_negatives_are_uniform_for_each_query() -> None:
    sampler = UniformSampler(12, 3, seed=0, pool=8)
    draws = torch.cat([_draw(sampler, [0, 1]).items.flatten() for _ in range(20000)])
    assert scipy.stats.chisquare(np.bincount(draws.numpy(), minlength=12)).pvalue > 1e-3


def test_exclusion_weights_exactly_the_own_positives_zero() -> None:
    sampler = UniformSampler(10, 5, rows_csr(ROWS, 10), seed=1, pool=10)
    for _ in range(50):
        users = [0, 1, 2, 3]
        negatives = _draw(sampler, users)
        own = torch.tensor([[item in ROWS[user] for item in row] for user, row in zip(users, negatives.items.tolist())])
        assert torch.equal(negatives.weight == 0, own)
        assert not negatives.unit_weights


def test_topk_over_a_pool_scores_the_pool_once_and_keeps_the_best() -> None:
    calls: list[tuple[int, ...]] = []

    def scorer(items: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(items.shape))
        return items.float() * 10 + torch.arange(items.shape[0]).unsqueeze(1) % 3  # per-query ties broken

    base = UniformSampler(40, 8, seed=2, pool=32)
    negatives = base(torch.arange(5), torch.zeros(5, dtype=torch.long), scorer)
    assert torch.equal(candidate_scores(negatives, scorer), scorer(negatives.items))
    assert calls[0] == (5, 32)  # the pool, not the [5, 8] candidates
    topk = TopKSampler(UniformSampler(40, 8, seed=2, pool=32), k=2, seed=0)
    kept = topk(torch.arange(5), torch.zeros(5, dtype=torch.long), scorer)
    expected = torch.sort(negatives.items, dim=1, descending=True).values[:, :2]
    assert torch.equal(torch.sort(kept.items, dim=1, descending=True).values, expected)


def test_pool_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="pool must hold at least n_negatives"):
        UniformConfig(n_negatives=8, pool=4)
    with pytest.raises(ValueError, match="cannot be shared"):
        UniformConfig(pool=16, shared=True)
    minimal = {"data": {"name": "sample"}, "model": {"name": "mf"}}
    with pytest.raises(ConfigError, match=r"candidates \(300\) exceed the base's pool \(256\)"):
        resolve_config(minimal, ["sampler.name=topk", "sampler.candidates=300"])
    config = resolve_config(minimal, ["sampler.name=topk", "sampler.candidates=300", "sampler.base.name=uniform",
                                      "sampler.base.pool=1024", "sampler.base.exclude_positives=true"])
    sampler = SAMPLERS.build(config.sampler, rows_interactions(ROWS, 2000), 0)
    assert sampler.base.pool == 1024 and sampler.base.n_negatives == 300


# -- pool blocks: each contiguous run of rows takes one block of the pool ------------------------------


@pytest.mark.parametrize(("batch", "n_blocks"), [(8, 4), (7, 3), (2, 5), (1, 4)])
def test_block_rows_are_contiguous_runs_of_ceil_b_over_g(batch: int, n_blocks: int) -> None:
    rows = block_rows(batch, n_blocks)
    per_block = -(-batch // n_blocks)
    assert rows.tolist() == [b // per_block for b in range(batch)]
    assert bool((rows.diff() >= 0).all()) and int(rows.max()) < n_blocks


def test_blocked_pool_gives_each_run_of_rows_one_whole_block() -> None:
    sampler = UniformSampler(50, 4, seed=3, pool=14, windows="blocks")  # 3 blocks of 4; 2 pool entries unused
    negatives = _draw(sampler, [0, 1, 2, 3, 0, 1, 2])  # 7 rows: runs of 3, 3, 1
    grid, pool, index = blocks(negatives), negatives.extras["pool"], negatives.extras["pool_index"]
    assert grid.shape == (3, 4) and pool.shape == (12,)
    assert torch.equal(grid, pool.view(3, 4))
    assert torch.equal(negatives.items, grid[torch.tensor([0, 0, 0, 1, 1, 1, 2])])
    assert torch.equal(negatives.items, pool[index])  # still a pooled layout for the GEMM paths


def test_blocked_negatives_are_uniform_for_each_query() -> None:
    sampler = UniformSampler(12, 3, seed=0, pool=9, windows="blocks")
    for row in (0, 2):  # the first and the last run
        draws = torch.cat([_draw(sampler, [0, 1, 2]).items[row] for _ in range(20000)])
        assert scipy.stats.chisquare(np.bincount(draws.numpy(), minlength=12)).pvalue > 1e-3


def test_blocked_exclusion_weights_exactly_the_own_positives_zero() -> None:
    sampler = UniformSampler(10, 5, rows_csr(ROWS, 10), seed=1, pool=10, windows="blocks")
    for _ in range(50):
        users = [0, 1, 2, 3]
        negatives = _draw(sampler, users)
        own = torch.tensor([[item in ROWS[user] for item in row] for user, row in zip(users, negatives.items.tolist())])
        assert torch.equal(negatives.weight == 0, own)


@pytest.mark.parametrize("batch", [8, 7, 2])
def test_dot_product_block_scores_equal_the_scores_of_each_rows_block(batch: int) -> None:
    torch.manual_seed(0)
    parts = TrainingParts(n_users=9, n_items=30, sampler=UniformSampler(30, 1), loss=bpr_loss,
                          evaluator=FullRankingEvaluator((2,)))
    model = MatrixFactorization(MFConfig(dim=5), parts)
    queries, pool = torch.randint(9, (batch,)), torch.randint(30, (3, 4))
    expected = model.score(queries, pool[block_rows(batch, 3)])  # [B, 4] gathered rows
    torch.testing.assert_close(model.score_blocks(queries, pool), expected)
    # A scorer without a faster way scores each row's block as items: the same values.
    plain = BoundScorer(model.score, queries)
    torch.testing.assert_close(plain.blocks(pool), expected)


def test_topk_over_blocks_keeps_the_best_of_each_rows_block() -> None:
    torch.manual_seed(0)
    parts = TrainingParts(n_users=9, n_items=30, sampler=UniformSampler(30, 1), loss=bpr_loss,
                          evaluator=FullRankingEvaluator((2,)))
    model = MatrixFactorization(MFConfig(dim=5), parts)
    queries = torch.arange(9)
    scorer = BoundScorer(model._score_without_grad, queries, model._score_blocks_without_grad)
    kept = TopKSampler(UniformSampler(30, 6, seed=4, pool=18, windows="blocks"), k=2, seed=0)(
        queries, torch.zeros(9, dtype=torch.long), scorer)
    candidates = UniformSampler(30, 6, seed=4, pool=18, windows="blocks")(queries, torch.zeros(9, dtype=torch.long), scorer)
    best = model._score_without_grad(queries, candidates.items).topk(2, dim=1).values
    got = model._score_without_grad(queries, kept.items).sort(dim=1, descending=True).values
    torch.testing.assert_close(got, best)
    assert "pool_blocks" not in kept.extras  # a selection is no longer laid out in blocks


def test_blocks_need_a_pool() -> None:
    with pytest.raises(ValueError, match="windows: blocks needs a pool"):
        UniformConfig(windows="blocks")
