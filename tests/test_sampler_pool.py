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
from recsys.samplers import SAMPLERS
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
