"""Sessions, TRON's preprocessing and given-file splits: hand-computed results and the yoochoose sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data.sessions import (
    Sessions,
    SessionSplit,
    given_split,
    read_otto,
    read_yoochoose,
    split_by_last_event,
    tron_split,
)
from recsys.errors import DataError

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
DAY, HOUR = 86_400.0, 3_600.0
A, B, C, D, E = 10, 20, 30, 40, 50  # original item ids


def _log(events: list[tuple[int, int, float, float] | tuple[int, int, float, float, str]]) -> pl.DataFrame:
    """``(session, item, day, hour[, type])`` rows -> a reader's frame (type defaults to clicks)."""
    return pl.DataFrame(
        {
            "session": pl.Series([e[0] for e in events], dtype=pl.Int64),
            "item": pl.Series([e[1] for e in events], dtype=pl.Int64),
            "timestamp": pl.Series([e[2] * DAY + e[3] * HOUR for e in events], dtype=pl.Float64),
            "type": pl.Series([e[4] if len(e) == 5 else "clicks" for e in events], dtype=pl.String),
        }
    )


def _as_lists(sessions: Sessions) -> dict[int, list[int]]:
    """Original session id -> its original item ids, in time order."""
    originals = sessions.item_ids.to_numpy()[sessions.items]
    return {
        int(session): originals[start:end].tolist()
        for session, start, end in zip(sessions.session_ids, sessions.offsets[:-1], sessions.offsets[1:], strict=True)
    }


# A log where each of TRON's steps changes the result (see the expected values in the test).
LOG = _log(
    [
        (1, A, 0, 1), (1, B, 0, 2), (1, C, 0, 3),
        (2, A, 1, 1), (2, E, 1, 2), (2, B, 1, 3),
        (3, B, 2, 1), (3, E, 2, 2),
        (4, C, 3, 1), (4, A, 3, 2), (4, E, 3, 3), (4, E, 3, 4, "carts"),
        (5, E, 4, 1), (5, C, 4, 2), (5, B, 4, 3),
        (6, A, 5, 1), (6, C, 5, 2),
        (7, B, 5, 5), (7, A, 6, 2), (7, D, 6, 3),
        (8, D, 6, 4), (8, C, 6, 5),
        (9, E, 2, 5),
        (10, D, 6, 6), (10, D, 6, 7), (10, D, 6, 8),
    ]
)


def test_tron_split_by_hand() -> None:
    # 1. Clicks only: E's cart in session 4 goes. 2. Session 9 (one event) goes. 3. Item support >= 5:
    #    A, B, C, D have 5 clicks each; E has 4 (5 if the cart or session 9 counted), so E goes.
    # 4. Sessions >= 2 again: session 3 is left with [B] and goes (B now has 4 clicks but stays: one pass).
    # 5. The last event is day 6 08:00, the cut day 5 08:00. Session 7 starts before the cut but ends
    #    after it, so it is test with 8 and 10; session 6 ends before it (day 5 02:00), so it is train.
    # 6. Train has A, B, C; D is unseen: 7 -> [B, A], 8 -> [C] (too short), 10 -> [] are what is left.
    split = tron_split(LOG)
    assert split.train.item_ids.to_list() == [A, B, C] and split.n_items == 3
    assert _as_lists(split.train) == {1: [A, B, C], 2: [A, B], 4: [C, A], 5: [C, B], 6: [A, C]}
    assert split.train.items.tolist() == [0, 1, 2, 0, 1, 2, 0, 2, 1, 0, 2]
    assert split.train.offsets.tolist() == [0, 3, 5, 7, 9, 11]
    assert _as_lists(split.test) == {7: [B, A]}
    assert split.test.timestamps.tolist() == [5 * DAY + 5 * HOUR, 6 * DAY + 2 * HOUR]
    assert len(split.valid) == 0 and split.valid.item_ids.equals(split.train.item_ids)


def test_tron_split_with_validation_by_hand() -> None:
    # Train ends day 5 02:00; a validation day takes the sessions ending from day 4 02:00 on: 5 and 6.
    # Train keeps A, B, C (session 1 has all three), so test is as without validation.
    split = tron_split(LOG, valid_days=1)
    assert _as_lists(split.train) == {1: [A, B, C], 2: [A, B], 4: [C, A]}
    assert _as_lists(split.valid) == {5: [C, B], 6: [A, C]}
    assert _as_lists(split.test) == {7: [B, A]}


def test_thresholds_are_arguments() -> None:
    # With support 4, E stays: sessions 2, 3, 4, 5 keep it (the cart and session 9 still go).
    split = tron_split(LOG, min_item_support=4, test_days=2)
    assert split.train.item_ids.to_list() == [A, B, C, E]
    # Two days before day 6 08:00 is day 4 08:00: sessions 1-5 end before it (5 at day 4 03:00).
    assert _as_lists(split.train) == {1: [A, B, C], 2: [A, E, B], 3: [B, E], 4: [C, A, E], 5: [E, C, B]}
    assert _as_lists(split.test) == {6: [A, C], 7: [B, A]}


def test_split_by_last_event_keeps_sessions_whole() -> None:
    early, late = split_by_last_event(LOG, days=1)
    assert sorted(late["session"].unique().to_list()) == [7, 8, 10]
    assert early.height + late.height == LOG.height


def test_given_split_by_hand() -> None:
    train = _log([(1, A, 0, 1), (1, B, 0, 2), (2, C, 0, 3), (2, A, 0, 4), (2, B, 0, 5, "orders"), (3, D, 0, 5)])
    valid = _log([(4, B, 1, 1), (4, E, 1, 2), (4, A, 1, 3), (5, E, 1, 4), (5, C, 1, 5)])
    test = _log([(6, D, 2, 1), (6, C, 2, 2), (6, B, 2, 3), (7, A, 2, 4)])
    split = given_split(train, test, valid)
    # Session 3 is too short to train on, so D is not in the item map; E never was.
    assert split.train.item_ids.to_list() == [A, B, C]
    assert _as_lists(split.train) == {1: [A, B], 2: [C, A]}
    assert _as_lists(split.valid) == {4: [B, A]}
    assert _as_lists(split.test) == {6: [C, B]}
    assert len(given_split(train, test).valid) == 0


def test_yoochoose_given_files_share_one_item_map() -> None:
    folder = DATA_ROOT / "yoochoose"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (see shared/data/README.md)")
    frames = {
        part: read_yoochoose(folder / f"yoochoose-clicks-100k_{part}.txt")
        for part in ("train_tr", "train_valid", "test")
    }
    split = given_split(frames["train_tr"], frames["test"], frames["train_valid"])
    train_items = frames["train_tr"]["item"].unique().sort()
    assert split.train.item_ids.equals(train_items) and split.n_items == 2_873
    assert (len(split.train), split.train.n_events) == (13_629, 53_254)
    # Every validation item is a train item; the test day loses the events on items that train_tr
    # lacks (train_full has them all) and then the sessions that became too short (computed here).
    assert (len(split.valid), split.valid.n_events) == (4_084, 16_539)
    assert (len(split.test), split.test.n_events) == (3_361, 13_235)
    for part in split.parts().values():
        assert part.item_ids is split.train.item_ids
        assert part.lengths().min() >= 2
        assert part.items.max() < split.n_items
    test_originals = split.test.item_ids.to_numpy()[split.test.items]
    assert np.isin(test_originals, frames["train_tr"]["item"].to_numpy()).all()


def test_tron_split_of_otto_keeps_clicks_only() -> None:
    path = DATA_ROOT / "otto" / "train.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found (see shared/data/README.md)")
    frame = read_otto(path)
    # The 20-session sample is tiny: with support 1, every click of a session of >= 2 clicks is kept.
    split = tron_split(frame, min_item_support=1)
    clicks = frame.filter(pl.col("type") == "clicks")
    long_enough = clicks.filter(pl.len().over("session") >= 2)
    assert len(split.train) + len(split.test) <= long_enough["session"].n_unique()
    assert split.train.n_events + split.test.n_events <= long_enough.height
    assert split.train.item_ids.equals(split.train.item_ids.sort())


# --- the Sessions container ------------------------------------------------------------------------


def test_sessions_container() -> None:
    sessions = Sessions.from_frame(_log([(9, B, 0, 2), (3, A, 0, 1), (9, A, 0, 1)]), pl.Series([A, B]))
    assert len(sessions) == 2 and sessions.n_events == 3 and sessions.n_items == 2
    assert sessions.session_ids.to_list() == [3, 9]
    assert sessions.items.tolist() == [0, 0, 1]  # session 9 in time order: A then B
    assert sessions.lengths().tolist() == [1, 2]
    with pytest.raises(ValueError, match="read-only"):
        sessions.items[0] = 1


@pytest.mark.parametrize(
    ("offsets", "items", "message"),
    [
        ([0, 2], [0, 1, 1], "offsets must rise from 0 to n_events"),
        ([0, 3], [0, 1, 2], "item id out of range"),
        ([0, 1, 3], [0, 1, 1], "one entry more than session_ids"),
    ],
)
def test_sessions_reject_inconsistent_arrays(offsets: list[int], items: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sessions(
            items=np.array(items, dtype=np.int64),
            offsets=np.array(offsets, dtype=np.int64),
            timestamps=np.zeros(len(items)),
            session_ids=pl.Series([7]),
            item_ids=pl.Series([A, B]),
            n_items=2,
        )


def test_a_split_without_train_or_test_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no sessions left"):
        tron_split(LOG, min_item_support=100)
    with pytest.raises(DataError, match="no test sessions"):
        given_split(LOG, LOG.filter(pl.col("item") == 12345))
    split = tron_split(LOG)
    with pytest.raises(ValueError, match="different item id map"):
        SessionSplit(train=split.train, valid=split.valid, test=Sessions.from_frame(LOG.head(0), pl.Series([A])))
