"""Preprocessing (threshold, duplicates, k-core, id encoding) and the Interactions container."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.interactions import Interactions
from recsys.data.preprocess import collapse_duplicates, encode, k_core, to_implicit
from recsys.errors import DataError

pairs_strategy = st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=60)


def _pairs(frame: pl.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user"].to_list(), frame["item"].to_list(), strict=True))


def _pair_frame(pairs: list[tuple[int, int]]) -> pl.DataFrame:
    users, items = [u for u, _ in pairs], [i for _, i in pairs]
    return pl.DataFrame({"user": users, "item": items}, schema={"user": pl.Int64, "item": pl.Int64})


# --- to_implicit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "kept"), [(None, [1.0, 3.0, 3.5, 4.0, 5.0]), (3.5, [3.5, 4.0, 5.0]), (4, [4.0, 5.0])]
)
def test_threshold_keeps_ratings_at_or_above_it(threshold: float | None, kept: list[float]) -> None:
    frame = pl.DataFrame({"user": [0] * 5, "item": range(5), "rating": [1.0, 3.0, 3.5, 4.0, 5.0]})
    assert to_implicit(frame, threshold, "x.csv")["rating"].to_list() == kept


def test_threshold_without_a_rating_column_names_the_source() -> None:
    frame = pl.DataFrame({"user": [0], "item": [1]})
    assert to_implicit(frame, None, "x.csv") is frame
    with pytest.raises(DataError, match=r"x\.csv: a rating threshold is set but the data has no rating"):
        to_implicit(frame, 3.0, "x.csv")


# --- collapse_duplicates -------------------------------------------------------------------------


def test_duplicates_collapse_to_the_earliest_timestamp() -> None:
    frame = pl.DataFrame(
        {
            "user": [1, 1, 1, 1, 2],
            "item": [2, 2, 3, 2, 2],
            "timestamp": [5.0, 3.0, 1.0, 4.0, 3.0],
            "rating": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    rows = sorted(collapse_duplicates(frame).rows())
    assert rows == [(1, 2, 3.0, 2.0), (1, 3, 1.0, 3.0), (2, 2, 3.0, 5.0)]


def test_duplicates_without_timestamps_keep_the_first_row() -> None:
    frame = pl.DataFrame({"user": [1, 1, 1], "item": [2, 3, 2], "rating": [4.0, 1.0, 2.0]})
    assert collapse_duplicates(frame).rows() == [(1, 2, 4.0), (1, 3, 1.0)]


# --- k_core --------------------------------------------------------------------------------------


def _reference_k_core(pairs: set[tuple[int, int]], min_user: int, min_item: int) -> set[tuple[int, int]]:
    """Peel one under-bound user or item at a time; the k-core is unique, so any order gives it."""
    pairs = set(pairs)
    while True:
        users = [p[0] for p in pairs]
        items = [p[1] for p in pairs]
        weak_user = next((u for u in set(users) if users.count(u) < min_user), None)
        if weak_user is not None:
            pairs = {p for p in pairs if p[0] != weak_user}
            continue
        weak_item = next((i for i in set(items) if items.count(i) < min_item), None)
        if weak_item is None:
            return pairs
        pairs = {p for p in pairs if p[1] != weak_item}


def test_k_core_needs_more_than_one_pass() -> None:
    # User 3 has one item (z=2); dropping it leaves z with one user (2), whose other item y=1 then
    # leaves user 2 with one item. Only users 0 and 1 over items 0 and 1 survive.
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2)]
    frame = _pair_frame(pairs)
    one_pass = frame.filter((pl.len().over("user") >= 2) & (pl.len().over("item") >= 2))
    assert _pairs(one_pass) != {(0, 0), (0, 1), (1, 0), (1, 1)}  # the fixture is not trivial
    assert _pairs(k_core(frame, 2, 2)) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_k_core_bounds_of_one_keep_everything() -> None:
    frame = _pair_frame([(0, 0), (1, 1)])
    assert k_core(frame, 1, 0).equals(frame)


@settings(max_examples=80, deadline=None)
@given(pairs=pairs_strategy, min_user=st.integers(0, 4), min_item=st.integers(0, 4))
def test_k_core_is_the_unique_fixed_point(pairs: list[tuple[int, int]], min_user: int, min_item: int) -> None:
    distinct = sorted(set(pairs))
    result = k_core(_pair_frame(distinct), min_user, min_item)
    assert (result.group_by("user").len()["len"] >= min_user).all()
    assert (result.group_by("item").len()["len"] >= min_item).all()
    assert _pairs(result) == _reference_k_core(set(distinct), min_user, min_item)


# --- encode --------------------------------------------------------------------------------------


def test_encode_gives_contiguous_ids_sorted_by_original_id_and_shared_by_parts() -> None:
    train = pl.DataFrame({"user": [30, 10, 30], "item": [700, 500, 900], "timestamp": [3.0, 1.0, 2.0]})
    test = pl.DataFrame({"user": [20, 10], "item": [500, 800], "timestamp": [4.0, 5.0]})
    parts = encode({"train": train, "test": test})
    assert list(parts) == ["train", "test"]
    for part in parts.values():
        assert (part.n_users, part.n_items) == (3, 4)
        assert part.user_ids.to_list() == [10, 20, 30]
        assert part.item_ids.to_list() == [500, 700, 800, 900]
    assert parts["train"].users.tolist() == [2, 0, 2]
    assert parts["train"].items.tolist() == [1, 0, 3]
    assert parts["test"].users.tolist() == [1, 0]  # user 20 is only in test, still in the shared space
    assert parts["test"].items.tolist() == [0, 2]
    assert parts["test"].timestamps.tolist() == [4.0, 5.0]
    assert parts["train"].ratings is None


@settings(max_examples=50, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 50)), min_size=1, max_size=40))
def test_encode_round_trips_through_the_id_maps(pairs: list[tuple[int, int]]) -> None:
    frame = _pair_frame(pairs).with_columns(rating=pl.lit(2.5))
    data = encode({"all": frame})["all"]
    assert data.users.dtype == np.int32 and data.items.dtype == np.int32
    assert data.user_ids.gather(data.users).to_list() == frame["user"].to_list()
    assert data.item_ids.gather(data.items).to_list() == frame["item"].to_list()
    assert set(data.users.tolist()) == set(range(data.n_users))  # contiguous: every id is used
    assert data.user_ids.is_sorted() and data.item_ids.is_sorted()
    assert data.ratings is not None and data.ratings.dtype == np.float32


def test_encode_with_nothing_left_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no interactions left"):
        encode({"all": _pair_frame([])})


# --- Interactions --------------------------------------------------------------------------------


def _interactions(users: list[int], items: list[int], n_users: int, n_items: int) -> Interactions:
    return Interactions(
        users=np.array(users, dtype=np.int32),
        items=np.array(items, dtype=np.int32),
        n_users=n_users,
        n_items=n_items,
        user_ids=pl.Series(range(n_users)),
        item_ids=pl.Series(range(n_items)),
    )


def test_interactions_counts_csr_and_select() -> None:
    data = _interactions([0, 2, 0, 2], [3, 0, 1, 3], n_users=3, n_items=4)
    assert data.user_counts().tolist() == [2, 0, 2]
    assert data.item_counts().tolist() == [1, 1, 0, 2]
    assert data.csr().toarray().tolist() == [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 1]]
    assert data.density == pytest.approx(4 / 12)
    kept = data.select(np.array([True, False, False, True]))
    assert (kept.users.tolist(), kept.items.tolist(), kept.n_users) == ([0, 2], [3, 3], 3)
    with pytest.raises(ValueError):
        data.users[0] = 1  # arrays are read-only: parts of a split cannot be edited in place


def test_interactions_union_and_validation() -> None:
    left = _interactions([0], [1], 2, 2)
    both = left.union(_interactions([1], [0], 2, 2))
    assert (both.users.tolist(), both.items.tolist()) == ([0, 1], [1, 0])
    with pytest.raises(ValueError, match="different id spaces"):
        left.union(_interactions([0], [0], 2, 3))
    with pytest.raises(ValueError, match="item id out of range"):
        _interactions([0], [2], 2, 2)
    with pytest.raises(ValueError, match="differ in length"):
        _interactions([0, 1], [0], 2, 2)
