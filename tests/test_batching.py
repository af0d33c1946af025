"""Training batches (every pair once per epoch) and evaluation batches (rows of the right matrices)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.batching import BatchGroups, ShuffledPairs, UserUniformPairs, ranking_batches
from recsys.data.interactions import Interactions


def _interactions(pairs: list[tuple[int, int]], n_users: int, n_items: int) -> Interactions:
    return Interactions(
        users=np.array([u for u, _ in pairs], dtype=np.int32),
        items=np.array([i for _, i in pairs], dtype=np.int32),
        n_users=n_users,
        n_items=n_items,
        user_ids=pl.Series(range(n_users)),
        item_ids=pl.Series(range(n_items)),
    )


def _pairs(rows: torch.Tensor, cols: torch.Tensor) -> list[tuple[int, int]]:
    return sorted(zip(rows.tolist(), cols.tolist(), strict=True))


# --- ranking_batches -----------------------------------------------------------------------------


def test_ranking_batches_by_hand() -> None:
    # train: u0 {0, 1}, u1 {2}, u2 {}, u3 {3, 4}; valid: u0 {2}, u2 {1}, u3 {0}. User 1 has nothing to
    # find, so it is skipped; with two users per batch the queries are [0, 2] then [3].
    train = _interactions([(0, 1), (0, 0), (1, 2), (3, 4), (3, 3)], n_users=4, n_items=5)
    valid = _interactions([(3, 0), (0, 2), (2, 1)], n_users=4, n_items=5)
    first, second = ranking_batches(valid, train, batch_size=2)
    assert first.queries.tolist() == [0, 2]
    assert _pairs(first.exclude_rows, first.exclude_cols) == [(0, 0), (0, 1)]
    assert _pairs(first.relevant_rows, first.relevant_cols) == [(0, 2), (1, 1)]
    assert second.queries.tolist() == [3]
    assert _pairs(second.exclude_rows, second.exclude_cols) == [(0, 3), (0, 4)]
    assert _pairs(second.relevant_rows, second.relevant_cols) == [(0, 0)]
    assert all(t.dtype == torch.long for batch in (first, second) for t in batch)


@settings(max_examples=60, deadline=None)
@given(
    train=st.sets(st.tuples(st.integers(0, 9), st.integers(0, 7)), max_size=40),
    target=st.sets(st.tuples(st.integers(0, 9), st.integers(0, 7)), min_size=1, max_size=20),
    batch_size=st.integers(1, 12),
)
def test_ranking_batches_hold_the_csr_rows_of_their_users(
    train: set[tuple[int, int]], target: set[tuple[int, int]], batch_size: int
) -> None:
    exclude_data = _interactions(sorted(train), 10, 8)
    target_data = _interactions(sorted(target), 10, 8)
    batches = ranking_batches(target_data, exclude_data, batch_size)
    queries = torch.cat([batch.queries for batch in batches]).tolist()
    assert queries == sorted({u for u, _ in target})  # every user with a target, once, in order
    for batch in batches:
        assert len(batch.queries) <= batch_size
        for name, pairs in (("exclude", train), ("relevant", target)):
            rows, cols = getattr(batch, f"{name}_rows"), getattr(batch, f"{name}_cols")
            users = batch.queries[rows].tolist() if len(rows) else []
            expected = sorted((u, i) for u, i in pairs if u in batch.queries.tolist())
            assert sorted(zip(users, cols.tolist(), strict=True)) == expected


# --- ShuffledPairs -------------------------------------------------------------------------------


def _epoch(pairs: ShuffledPairs) -> list[tuple[int, int]]:
    return [pair for users, items in pairs for pair in zip(users.tolist(), items.tolist(), strict=True)]


def test_shuffled_pairs_cover_every_pair_once_per_epoch_in_a_new_order() -> None:
    data = _interactions([(u, i) for u in range(8) for i in range(u % 5 + 1)], n_users=8, n_items=5)
    everything = sorted(zip(data.users.tolist(), data.items.tolist(), strict=True))
    pairs = ShuffledPairs(data, batch_size=5, seed=11)
    assert len(data) == 21 and len(pairs) == 5
    batches = list(pairs)
    assert [len(users) for users, _ in batches] == [5, 5, 5, 5, 1]
    assert all(users.dtype == torch.long and items.dtype == torch.long for users, items in batches)
    first = [p for users, items in batches for p in zip(users.tolist(), items.tolist(), strict=True)]
    second = _epoch(pairs)
    assert sorted(first) == sorted(second) == everything
    assert first != second  # reshuffled between epochs

    again = ShuffledPairs(data, batch_size=5, seed=11)
    assert _epoch(again) == first and _epoch(again) == second  # same seed, same epochs
    assert _epoch(ShuffledPairs(data, batch_size=5, seed=12)) != first


def test_shuffled_pairs_without_shuffle_keep_the_stored_order() -> None:
    data = _interactions([(2, 0), (0, 1), (1, 1)], n_users=3, n_items=2)
    pairs = ShuffledPairs(data, batch_size=2, seed=0, shuffle=False)
    assert _epoch(pairs) == _epoch(pairs) == [(2, 0), (0, 1), (1, 1)]


# --- UserUniformPairs ----------------------------------------------------------------------------


def _skewed() -> Interactions:
    # User 0 holds 50 items, users 1..9 one each, user 10 none: 59 pairs, 10 users with items.
    pairs = [(0, i) for i in range(50)] + [(u, 50 + u) for u in range(1, 10)]
    return _interactions(pairs, n_users=11, n_items=60)


def _chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_user_uniform_pairs_draw_users_then_their_items_uniformly() -> None:
    data = _skewed()
    pairs = UserUniformPairs(data, batch_size=16, seed=5)
    assert len(pairs) == len(ShuffledPairs(data, batch_size=16, seed=5)) == 4  # 59 pairs a epoch
    drawn = [pair for _ in range(400) for pair in _epoch(pairs)]  # 400 epochs, 23,600 pairs
    assert len(drawn) == 400 * 59
    assert set(drawn) <= set(zip(data.users.tolist(), data.items.tolist(), strict=True))  # real pairs only
    users = np.array([u for u, _ in drawn])
    user_counts = np.bincount(users, minlength=11)
    assert user_counts[10] == 0  # a user without items is never drawn
    # Uniform over the 10 users (ShuffledPairs would give user 0 50 / 59 of the pairs): chi-square
    # below its 99.9% quantile, 27.9 at 9 degrees of freedom; and user 0's items uniform (86.7 at 49).
    assert _chi_square(user_counts[:10]) < 27.9
    assert 0.09 < user_counts[0] / len(drawn) < 0.11
    item_counts = np.bincount([i for u, i in drawn if u == 0], minlength=50)
    assert _chi_square(item_counts) < 86.7


def test_user_uniform_pairs_are_reproducible_and_new_every_epoch() -> None:
    data = _skewed()
    pairs = UserUniformPairs(data, batch_size=16, seed=5)
    first, second = _epoch(pairs), _epoch(pairs)
    assert first != second
    again = UserUniformPairs(data, batch_size=16, seed=5)
    assert _epoch(again) == first and _epoch(again) == second
    assert _epoch(UserUniformPairs(data, batch_size=16, seed=6)) != first
    batches = list(UserUniformPairs(data, batch_size=16, seed=5))
    assert [len(users) for users, _ in batches] == [16, 16, 16, 11]
    assert all(users.dtype == torch.long and items.dtype == torch.long for users, items in batches)


def test_no_interactions_are_no_batches() -> None:
    empty = _interactions([], n_users=3, n_items=2)
    for pairs in (ShuffledPairs(empty, batch_size=4, seed=0), UserUniformPairs(empty, batch_size=4, seed=0)):
        assert len(pairs) == 0 and list(pairs) == []


# --- BatchGroups ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("per_call", "sizes"), [(1, [1] * 5), (2, [2, 2, 1]), (5, [5]), (9, [5]), (None, [1] * 5)])
def test_batch_groups_hand_out_the_same_batches_in_order(per_call: int | None, sizes: list[int]) -> None:
    data = _interactions([(u, i) for u in range(8) for i in range(u % 5 + 1)], n_users=8, n_items=5)
    groups = BatchGroups(ShuffledPairs(data, batch_size=5, seed=3), per_call)
    batches = list(groups)
    assert len(groups) == len(batches) and [len(group) for group in batches] == sizes
    flat = [pair for group in batches for users, items in group for pair in zip(users.tolist(), items.tolist(), strict=True)]
    assert flat == _epoch(ShuffledPairs(data, batch_size=5, seed=3))  # epoch 0 of the same seed
    assert len(list(groups)) == len(sizes)  # the next epoch, grouped alike


def test_batch_groups_default_to_about_ten_calls_per_epoch() -> None:
    data = _interactions([(u, i) for u in range(50) for i in range(9)], n_users=50, n_items=9)
    groups = BatchGroups(ShuffledPairs(data, batch_size=2, seed=0))  # 225 batches
    assert len(groups) == 10 and [len(group) for group in groups] == [23] * 9 + [18]
    with pytest.raises(ValueError, match="per_call"):
        BatchGroups(ShuffledPairs(data, batch_size=2, seed=0), 0)
