"""UniformSampler with ``shared=True``: one draw per batch as a stride-0 [B, N] view, exclusion of the
batch's positives, and weight 0 on each query's own training positives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from factories import rows_csr, rows_interactions
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.samplers import SAMPLERS
from recsys.samplers.uniform import UniformConfig, UniformSampler


def _draw(sampler: UniformSampler, users: list[int] | torch.Tensor, positives: list[int] | torch.Tensor | None = None):
    queries = torch.as_tensor(users, dtype=torch.long)
    positives = torch.zeros_like(queries) if positives is None else torch.as_tensor(positives, dtype=torch.long)
    return sampler(queries, positives, scorer=lambda items: torch.zeros(items.shape))


# --- one draw per batch ----------------------------------------------------------------------------


@pytest.mark.parametrize("exclude_batch_positives", [False, True])
def test_shared_draw_is_a_stride_zero_view_with_identical_rows(exclude_batch_positives: bool) -> None:
    sampler = UniformSampler(30, 12, seed=1, shared=True, exclude_batch_positives=exclude_batch_positives)
    negatives = _draw(sampler, [4, 0, 2, 2, 1], positives=[3, 7, 7, 0, 9])
    assert negatives.shared
    assert negatives.items.shape == negatives.log_q.shape == negatives.weight.shape == (5, 12)
    assert negatives.items.dtype == torch.long
    assert negatives.items.stride(0) == 0 and negatives.log_q.stride(0) == 0
    assert bool((negatives.items == negatives.items[0]).all())
    assert negatives.unit_weights and bool((negatives.weight == 1).all())
    assert negatives.pos_weight.shape == (5,) and bool((negatives.pos_weight == 1).all())
    n_allowed = 30 - 4 if exclude_batch_positives else 30  # 4 distinct batch positives
    torch.testing.assert_close(negatives.log_q, torch.full((5, 12), -math.log(n_allowed)))


def test_batch_of_one_is_not_reported_as_shared() -> None:
    negatives = _draw(UniformSampler(30, 4, seed=1, shared=True), [0])
    assert negatives.items.shape == (1, 4) and not negatives.shared


def test_shared_draws_are_uniform_and_seeded() -> None:
    sampler = UniformSampler(41, 2000, seed=2, shared=True)
    items = torch.cat([_draw(sampler, [0, 1, 2]).items[0] for _ in range(100)])  # 2 * 10^5 draws
    assert scipy.stats.chisquare(np.bincount(items.numpy(), minlength=41)).pvalue > 1e-3

    def first(seed: int) -> torch.Tensor:
        return _draw(UniformSampler(1000, 16, seed=seed, shared=True), [0, 1]).items

    assert torch.equal(first(5), first(5))
    assert not torch.equal(first(5), first(6))


# --- exclude_batch_positives -----------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    st.integers(2, 30).flatmap(
        lambda n_items: st.tuples(st.just(n_items), st.lists(st.integers(0, n_items - 1), min_size=1, max_size=40))
    ),
    st.integers(0, 2**31 - 1),
)
def test_exclude_batch_positives_never_returns_one(batch: tuple[int, list[int]], seed: int) -> None:
    n_items, positives = batch
    distinct = len(set(positives))
    sampler = UniformSampler(n_items, 25, seed=seed, shared=True, exclude_batch_positives=True)
    if distinct == n_items:
        with pytest.raises(ValueError, match="every item is a positive"):
            _draw(sampler, list(range(len(positives))), positives)
        return
    negatives = _draw(sampler, list(range(len(positives))), positives)
    assert negatives.items.shape == (len(positives), 25)
    assert not set(negatives.items[0].tolist()) & set(positives)
    assert bool(((negatives.items >= 0) & (negatives.items < n_items)).all())
    torch.testing.assert_close(negatives.log_q, torch.full((len(positives), 25), -math.log(n_items - distinct)))


def test_exclude_batch_positives_is_uniform_over_the_rest() -> None:
    sampler = UniformSampler(50, 4000, seed=3, shared=True, exclude_batch_positives=True)
    positives = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 0, 49]  # 11 distinct: 39 allowed, 10^5 draws of them
    items = torch.cat([_draw(sampler, list(range(len(positives))), positives).items[0] for _ in range(25)])
    observed = np.bincount(items.numpy(), minlength=50)
    allowed = np.setdiff1d(np.arange(50), positives)
    assert observed[positives].sum() == 0
    assert scipy.stats.chisquare(observed[allowed]).pvalue > 1e-3


def test_exclude_batch_positives_needs_shared() -> None:
    with pytest.raises(ValueError, match="exclude_batch_positives needs shared"):
        UniformConfig(exclude_batch_positives=True)


# --- exclude_positives with shared: weight 0, not rejection ----------------------------------------


def test_own_training_positives_get_weight_zero_and_the_rest_one() -> None:
    rows = [[0, 1, 2], [3, 4], [], list(range(5, 20))]
    positives = rows_csr(rows, 20)
    sampler = UniformSampler(20, 200, positives, seed=4, shared=True)
    users = [3, 0, 2, 1, 0, 3]
    negatives = _draw(sampler, users)
    assert negatives.shared and not negatives.unit_weights
    assert negatives.weight.shape == (6, 200)
    items = negatives.items[0].tolist()
    assert set(items) == set(range(20))  # 200 draws of 20: positives are drawn, not rejected
    expected = torch.tensor([[0.0 if item in rows[user] else 1.0 for item in items] for user in users])
    assert torch.equal(negatives.weight, expected)
    torch.testing.assert_close(negatives.log_q, torch.full((6, 200), -math.log(20)))


def test_shared_exclusions_combine() -> None:
    """Batch positives are never drawn; the other training positives of each query get weight 0."""
    rows = [[0, 1, 5], [2, 6]]
    sampler = UniformSampler(10, 300, rows_csr(rows, 10), seed=5, shared=True, exclude_batch_positives=True)
    negatives = _draw(sampler, [0, 1], positives=[0, 2])
    items = negatives.items[0].tolist()
    assert set(items) == {1, 3, 4, 5, 6, 7, 8, 9}
    expected = torch.tensor([[0.0 if item in row else 1.0 for item in items] for row in rows])
    assert torch.equal(negatives.weight, expected)
    torch.testing.assert_close(negatives.log_q, torch.full((2, 300), -math.log(8)))


def test_from_config_builds_a_shared_sampler() -> None:
    train = rows_interactions([[0, 1], [2]], n_items=6)
    config = SAMPLERS.config_class("uniform")(
        n_negatives=40, shared=True, exclude_positives=True, exclude_batch_positives=True
    )
    sampler = SAMPLERS.build(config, train, 2)
    assert isinstance(sampler, UniformSampler) and sampler.shared and sampler.exclude_batch_positives
    negatives = _draw(sampler, [0, 1], positives=[1, 2])
    assert negatives.shared and not ({1, 2} & set(negatives.items[0].tolist()))
    assert torch.equal(negatives.weight[0], (negatives.items[0] != 0).float())  # user 0's other positive
    assert bool((negatives.weight[1] == 1).all())
