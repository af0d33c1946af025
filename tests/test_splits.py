"""Splits: RecBole-compatible per-user counts, determinism for a seed, and the time order of parts.

Most fixtures give every interaction a distinct timestamp equal to its row number, so the timestamps
of a part tell exactly which input rows it holds.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from recsys.data.interactions import Interactions, Split
from recsys.data.splits import carve_validation, leave_one_out, random_split, ratio_counts, temporal_split
from recsys.errors import DataError


def _interactions(
    users: list[int] | np.ndarray,
    items: list[int] | np.ndarray | None = None,
    timestamps: list[float] | np.ndarray | None = None,
    n_users: int | None = None,
    n_items: int | None = None,
) -> Interactions:
    """Interactions over ``max + 1`` ids; items default to the row number (so every pair is distinct)."""
    users = np.asarray(users, dtype=np.int32)
    items = np.arange(len(users), dtype=np.int32) if items is None else np.asarray(items, dtype=np.int32)
    n_users = int(users.max()) + 1 if n_users is None else n_users
    n_items = int(items.max()) + 1 if n_items is None else n_items
    return Interactions(
        users=users,
        items=items,
        n_users=n_users,
        n_items=n_items,
        user_ids=pl.Series(range(n_users)),
        item_ids=pl.Series(range(n_items)),
        timestamps=None if timestamps is None else np.asarray(timestamps, dtype=np.float64),
    )


def _rows(part: Interactions) -> list[int]:
    """Input rows of a part, read from row-number timestamps."""
    return sorted(part.timestamps.astype(int).tolist())


def _recbole_counts(total: int, ratios: list[float]) -> list[int]:
    """RecBole 1.2.1: ``split_by_ratio`` normalises the ratios, then ``_calcu_split_ids`` counts."""
    ratio_sum = sum(ratios)
    ratios = [r / ratio_sum for r in ratios]
    cnt = [int(r * total) for r in ratios]
    cnt[0] = total - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


# --- ratio_counts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "expected"),
    [(0, [0, 0, 0]), (1, [1, 0, 0]), (2, [1, 0, 1]), (3, [1, 1, 1]), (5, [3, 1, 1]), (10, [8, 1, 1]),
     (25, [21, 2, 2])],
)
def test_ratio_counts_by_hand(total: int, expected: list[int]) -> None:
    # 5: floor(0.5) = 0 for valid and test, so each takes one from train (test first).
    # 2: test takes one, then train is down to one and valid gets none.
    assert ratio_counts(np.array([total]), (0.8, 0.1, 0.1)).tolist() == [expected]


@settings(max_examples=200, deadline=None)
@given(
    totals=st.lists(st.integers(0, 5000), min_size=1, max_size=20),
    ratios=st.lists(st.floats(0.0, 10.0, allow_subnormal=False), min_size=2, max_size=5).filter(
        lambda r: r[0] > 0
    ),
)
def test_ratio_counts_match_recbole(totals: list[int], ratios: list[float]) -> None:
    counts = ratio_counts(np.array(totals), tuple(ratios))
    assert counts.tolist() == [_recbole_counts(total, ratios) for total in totals]
    assert (counts.sum(axis=1) == totals).all() and (counts >= 0).all()


# --- random_split --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    users=st.lists(st.integers(0, 6), min_size=8, max_size=80),
    ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.1, 0.4), (2.0, 1.0, 1.0)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_split_partitions_each_user_by_ratio_counts(
    users: list[int], ratios: tuple[float, float, float], seed: int
) -> None:
    data = _interactions(users, timestamps=np.arange(len(users)))
    expected = ratio_counts(data.user_counts(), ratios)
    assume((expected.sum(axis=0) > 0).all())  # otherwise Split refuses an empty part (tested below)
    split = random_split(data, ratios, np.random.default_rng(seed))
    rows = [_rows(part) for part in split.parts().values()]
    assert sorted(sum(rows, [])) == list(range(len(users)))  # disjoint, and together the input
    for index, part in enumerate(split.parts().values()):
        assert part.user_counts().tolist() == expected[:, index].tolist()
        assert part.users.tolist() == [users[row] for row in part.timestamps.astype(int)]


def test_random_split_is_deterministic_for_a_seed() -> None:
    data = _interactions(np.repeat(np.arange(10), 20), timestamps=np.arange(200))
    first, again = (random_split(data, (0.8, 0.1, 0.1), np.random.default_rng(7)) for _ in range(2))
    other = random_split(data, (0.8, 0.1, 0.1), np.random.default_rng(8))
    for name in ("train", "valid", "test"):
        assert np.array_equal(first.parts()[name].items, again.parts()[name].items)
    assert _rows(first.test) != _rows(other.test)


def test_an_empty_part_is_a_data_error() -> None:
    # One interaction per user: ratio_counts keeps each in train, so valid and test are empty.
    with pytest.raises(DataError, match="the split left no valid interactions"):
        random_split(_interactions([0, 1, 2]), (0.8, 0.1, 0.1), np.random.default_rng(0))
    data = _interactions([0, 1])
    with pytest.raises(DataError, match="no test interactions"):
        Split(train=data, valid=data, test=data.select(np.zeros(2, dtype=bool)))


# --- leave_one_out -------------------------------------------------------------------------------


def test_leave_one_out_by_hand() -> None:
    #           user 0 (4 rows)   user 1 (2)  user 2 (1)  user 3 (3, tied times)
    users = [0, 0, 0, 0, 1, 1, 2, 3, 3, 3]
    times = [5, 1, 3, 9, 2, 1, 4, 7, 7, 7]
    split = leave_one_out(_interactions(users, timestamps=times))
    # user 0: latest (t=9, row 3) is test, then t=5 (row 0) valid; user 1: one test (t=2, row 4);
    # user 2 keeps its only interaction in train; user 3 puts one tied row in each part.
    assert sorted(zip(split.test.users.tolist(), split.test.timestamps.tolist())) == [(0, 9), (1, 2), (3, 7)]
    assert sorted(zip(split.valid.users.tolist(), split.valid.timestamps.tolist())) == [(0, 5), (3, 7)]
    assert sorted(zip(split.train.users.tolist(), split.train.timestamps.tolist())) == [
        (0, 1), (0, 3), (1, 1), (2, 4), (3, 7)
    ]
    every_row = split.test.items.tolist() + split.valid.items.tolist() + split.train.items.tolist()
    assert sorted(every_row) == list(range(10))


@settings(max_examples=60, deadline=None)
@given(users=st.lists(st.integers(0, 5), min_size=8, max_size=60), seed=st.integers(0, 1000))
def test_leave_one_out_takes_each_users_latest(users: list[int], seed: int) -> None:
    assume(max(Counter(users).values()) >= 3)
    times = np.random.default_rng(seed).permutation(len(users)).astype(float)  # distinct times
    split = leave_one_out(_interactions(users, timestamps=times))
    for user, count in Counter(users).items():
        own = sorted(times[[row for row, u in enumerate(users) if u == user]])
        test = split.test.timestamps[split.test.users == user].tolist()
        valid = split.valid.timestamps[split.valid.users == user].tolist()
        assert test == (own[-1:] if count >= 2 else [])
        assert valid == (own[-2:-1] if count >= 3 else [])
        assert len(split.train.timestamps[split.train.users == user]) == count - len(test) - len(valid)


def test_time_splits_need_timestamps() -> None:
    data = _interactions([0, 0, 0])
    with pytest.raises(DataError, match="leave-one-out needs timestamps"):
        leave_one_out(data)
    with pytest.raises(DataError, match="temporal split needs timestamps"):
        temporal_split(data, (0.8, 0.1, 0.1))


# --- temporal_split ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 30), min_size=10, max_size=80),  # small range: many ties
    users=st.lists(st.integers(0, 4), min_size=80, max_size=80),
)
def test_temporal_split_orders_parts_in_time(times: list[int], users: list[int]) -> None:
    data = _interactions(users[: len(times)], timestamps=times)
    split = temporal_split(data, (0.8, 0.1, 0.1))
    train, valid, test = (part.timestamps for part in split.parts().values())
    assert train.max() <= valid.min() and valid.max() <= test.min()
    expected = ratio_counts(np.array([len(times)]), (0.8, 0.1, 0.1))[0]
    assert [len(train), len(valid), len(test)] == expected.tolist()
    assert sorted(np.concatenate([train, valid, test]).tolist()) == sorted(times)


# --- carve_validation ----------------------------------------------------------------------------


def test_carve_validation_leaves_test_alone_and_splits_train_per_user() -> None:
    train = _interactions(np.repeat(np.arange(4), [1, 2, 10, 25]), timestamps=np.arange(38))
    test = _interactions([0, 3], items=[5, 6], n_users=4, n_items=38, timestamps=[100.0, 101.0])
    split = carve_validation(train, test, 0.1, np.random.default_rng(3))
    assert split.test is test
    assert sorted(_rows(split.train) + _rows(split.valid)) == list(range(38))
    # RecBole counts for (0.9, 0.1): 1 -> 0, 2 -> 1 (bumped), 10 -> 1, 25 -> floor(2.5) = 2.
    assert split.valid.user_counts().tolist() == [0, 1, 1, 2]
    again = carve_validation(train, test, 0.1, np.random.default_rng(3))
    assert _rows(again.valid) == _rows(split.valid)
