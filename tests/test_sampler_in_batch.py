"""InBatchSampler: the batch's positives as one shared set (all, or N random positions), each query's
own position weighted 0, log-frequency log_q, accidental hits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.stats
import torch
from factories import rows_interactions
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.samplers import SAMPLERS
from recsys.samplers.in_batch import InBatchConfig, InBatchSampler


def _draw(sampler: InBatchSampler, positives: list[int] | torch.Tensor):
    positives = torch.as_tensor(positives, dtype=torch.long)
    queries = torch.arange(len(positives))
    return sampler(queries, positives, scorer=lambda items: torch.zeros(items.shape))


# --- all positives of the batch --------------------------------------------------------------------


@pytest.mark.parametrize("n_negatives", [None, 5, 9])
def test_all_positives_shared_with_the_own_position_weighted_zero(n_negatives: int | None) -> None:
    sampler = InBatchSampler(np.ones(20, dtype=np.int64), n_negatives, seed=0)
    negatives = _draw(sampler, [10, 11, 12, 13, 14])  # N >= B = 5: every position
    assert negatives.shared and negatives.items.dtype == torch.long
    assert torch.equal(negatives.items, torch.tensor([[10, 11, 12, 13, 14]] * 5))
    assert torch.equal(negatives.weight, 1 - torch.eye(5))
    assert not negatives.unit_weights
    assert negatives.log_q.shape == (5, 5)
    assert negatives.pos_weight.shape == (5,) and bool((negatives.pos_weight == 1).all())


def test_batch_of_two_gets_each_other() -> None:
    negatives = _draw(InBatchSampler(np.ones(5, dtype=np.int64), None, seed=0), [3, 1])
    kept = negatives.items[negatives.weight > 0].view(2, 1)
    assert torch.equal(kept, torch.tensor([[1], [3]]))


def test_batch_of_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        _draw(InBatchSampler(np.ones(5, dtype=np.int64), None, seed=0), [3])


# --- N random positions ----------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(st.integers(3, 40).flatmap(lambda b: st.tuples(st.just(b), st.integers(1, b - 1))), st.integers(0, 2**31 - 1))
def test_n_distinct_positions_shared_by_the_batch(batch_and_n: tuple[int, int], seed: int) -> None:
    batch, n_negatives = batch_and_n
    sampler = InBatchSampler(np.ones(100, dtype=np.int64), n_negatives, seed=seed)
    positives = torch.arange(batch) + 50  # distinct: an item names its position
    negatives = _draw(sampler, positives)
    assert negatives.items.shape == (batch, n_negatives) and negatives.shared
    positions = negatives.items[0] - 50
    assert len(set(positions.tolist())) == n_negatives and bool(((positions >= 0) & (positions < batch)).all())
    own = positions.unsqueeze(0) == torch.arange(batch).unsqueeze(1)
    assert torch.equal(negatives.weight == 0, own)  # exactly the query's own position is dropped


def test_each_position_is_equally_likely() -> None:
    """Over 4000 batches of 7 with N = 2, each position is chosen in 2/7 of them."""
    sampler = InBatchSampler(np.ones(10, dtype=np.int64), 2, seed=1)
    positives = torch.arange(7)
    chosen = torch.stack([_draw(sampler, positives).items[0] for _ in range(4000)])
    observed = np.bincount(chosen.flatten().numpy(), minlength=7)
    assert scipy.stats.chisquare(observed).pvalue > 1e-3


def test_same_seed_same_subsets_different_seed_different() -> None:
    def draws(seed: int) -> torch.Tensor:
        sampler = InBatchSampler(np.ones(50, dtype=np.int64), 3, seed=seed)
        return torch.stack([_draw(sampler, torch.arange(30)).items for _ in range(3)])

    assert torch.equal(draws(6), draws(6))
    assert not torch.equal(draws(6), draws(7))


# --- log_q -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_negatives", [None, 2])
def test_log_q_is_the_log_training_frequency(n_negatives: int | None) -> None:
    counts = np.array([5, 1, 0, 14, 30], dtype=np.int64)  # total 50
    sampler = InBatchSampler(counts, n_negatives, seed=0)
    positives = torch.tensor([0, 1, 3, 4, 3])
    negatives = _draw(sampler, positives)
    frequency = torch.tensor([0.1, 0.02, 0.0, 0.28, 0.6])
    torch.testing.assert_close(negatives.log_q, torch.log(frequency[negatives.items]))
    torch.testing.assert_close(negatives.extras["pos_log_q"], torch.log(frequency[positives]))


# --- accidental hits -------------------------------------------------------------------------------


def test_accidental_hits_mark_every_copy_of_the_own_positive() -> None:
    positives = torch.tensor([3, 5, 3, 7, 5])
    negatives = _draw(InBatchSampler(np.ones(8, dtype=np.int64), None, seed=0), positives)
    with pytest.raises(ValueError, match="do not know their positives"):
        negatives.accidental_hits()
    hits = replace(negatives, positives=positives).accidental_hits()  # as the training step does
    expected = positives.unsqueeze(1) == positives.unsqueeze(0)  # own position and duplicates
    assert torch.equal(hits, expected)


def test_distinct_positives_hit_only_their_own_position() -> None:
    sampler = InBatchSampler(np.ones(30, dtype=np.int64), None, seed=2)
    positives = torch.randperm(30, generator=torch.Generator().manual_seed(0))[:12]
    negatives = replace(_draw(sampler, positives), positives=positives)
    assert torch.equal(negatives.accidental_hits(), torch.eye(12, dtype=torch.bool))


# --- config ----------------------------------------------------------------------------------------


def test_registry_builds_the_in_batch_sampler_from_item_counts() -> None:
    train = rows_interactions([[0, 1], [1], [1, 3]], n_items=4)  # counts 1, 3, 0, 1 of 5
    config = SAMPLERS.config_class("in_batch")(n_negatives=1)
    sampler = SAMPLERS.build(config, train, 3)
    assert isinstance(sampler, InBatchSampler) and sampler.seed == 3 and sampler.n_negatives == 1
    negatives = _draw(sampler, [0, 1, 3])
    assert negatives.items.shape == (3, 1)
    torch.testing.assert_close(negatives.log_q, torch.log(torch.tensor([0.2, 0.6, 0.0, 0.2]))[negatives.items])
    assert InBatchConfig().n_negatives is None


def test_excluding_positives_zeroes_a_users_other_positives_and_keeps_the_rest() -> None:
    # User 0 has items 1, 2 and 5; user 1 has item 3. In a batch (0, 1), (0, 2), (1, 3), (0, 5), user 0's
    # queries must not get 1, 2 or 5 as negatives; user 1's may get all but its own 3.
    train = rows_interactions([[1, 2, 5], [3]], n_items=6)
    sampler = SAMPLERS.build(InBatchConfig(exclude_positives=True), train, seed=0)
    queries, positives = torch.tensor([0, 0, 1, 0]), torch.tensor([1, 2, 3, 5])
    negatives = sampler(queries, positives, scorer=None)
    assert negatives.items[0].tolist() == [1, 2, 3, 5]
    assert negatives.weight.tolist() == [[0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0]]
    plain = SAMPLERS.build(InBatchConfig(), train, seed=0)(queries, positives, scorer=None)
    assert plain.weight.tolist() == [[0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]
