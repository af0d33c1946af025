"""TRON's session preprocessing, on ``(session, item, timestamp[, type])`` frames from the readers.

Wilm et al., "Scaling Session-Based Transformer Recommendations using Optimized Negative Sampling and
Loss Functions", RecSys 2023 (otto-de/TRON ``src/preprocessing.py``): keep clicks; drop sessions shorter
than 2, then events on items seen fewer than 5 times, then sessions shorter than 2 again (one pass, not
a fixpoint); the sessions that end in the last day are the test set; test events on items unseen in
train are dropped, then test sessions shorter than 2. The time cut is measured from the latest event,
as in session-rec (``tmax - 86400 * days_test``); TRON's script measures it from the latest session
start. Every step is a polars expression over all events.
"""

from __future__ import annotations

import polars as pl

from recsys.data.sessions.sessions import Sessions, SessionSplit
from recsys.errors import DataError

__all__ = [
    "clicks_only",
    "drop_unseen_items",
    "filter_items",
    "filter_sessions",
    "given_split",
    "last_sessions",
    "split_by_last_event",
    "tron_split",
]

_SECONDS_PER_DAY = 86_400.0


def clicks_only(frame: pl.DataFrame) -> pl.DataFrame:
    """The click events, without the ``type`` column (frames without ``type`` are all clicks)."""
    if "type" not in frame.columns:
        return frame
    return frame.filter(pl.col("type") == "clicks").drop("type")


def filter_sessions(frame: pl.DataFrame, min_length: int) -> pl.DataFrame:
    """Drop sessions with fewer than ``min_length`` events."""
    return frame.filter(pl.len().over("session") >= min_length)


def filter_items(frame: pl.DataFrame, min_support: int) -> pl.DataFrame:
    """Drop events on items that occur fewer than ``min_support`` times."""
    return frame.filter(pl.len().over("item") >= min_support)


def split_by_last_event(frame: pl.DataFrame, days: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split whole sessions by the time of their last event.

    A session is *late* when its last event is at or after ``max(timestamp) - days * 86400``
    (session-rec's ``tmax - 86400 * days_test``); the others are *early*.

    Returns:
        ``(early, late)`` frames.
    """
    cut = frame["timestamp"].max() - days * _SECONDS_PER_DAY
    late = pl.col("timestamp").max().over("session") >= cut
    return frame.filter(~late), frame.filter(late)


def last_sessions(frame: pl.DataFrame, ratio: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split whole sessions: the ``ratio`` fraction of sessions that end last (at least one) apart.

    For files without times the timestamps are event positions, so this is the last sessions of the file
    (the SR-GNN line of work holds out the last 10% of training sessions for validation).

    Returns:
        ``(early, late)`` frames.
    """
    ends = frame.group_by("session").agg(pl.col("timestamp").max().alias("end")).sort("end", "session")
    n_late = max(1, round(ratio * ends.height))
    late = ends["session"].tail(n_late).implode()
    return frame.filter(~pl.col("session").is_in(late)), frame.filter(pl.col("session").is_in(late))


def drop_unseen_items(frame: pl.DataFrame, item_ids: pl.Series, min_length: int) -> pl.DataFrame:
    """Drop events on items not in ``item_ids``, then sessions left shorter than ``min_length``."""
    return filter_sessions(frame.filter(pl.col("item").is_in(item_ids.implode())), min_length)


def tron_split(
    frame: pl.DataFrame,
    *,
    min_session_length: int = 2,
    min_item_support: int = 5,
    test_days: float = 1.0,
    valid_days: float | None = None,
) -> SessionSplit:
    """Filter and split one event log by time, as TRON prepares OTTO, Yoochoose and Diginetica.

    Steps: clicks only; sessions >= ``min_session_length``; items >= ``min_item_support``; sessions
    again. Sessions whose last event is in the last ``test_days`` days are test; with ``valid_days``,
    those whose last event is in the last ``valid_days`` days of the rest are validation. The item id
    map is the (sorted) items of train, so a model's embedding table covers exactly what it trains on;
    valid and test lose events on other items, then sessions shorter than ``min_session_length``.

    Args:
        frame: events from a reader (``session``, ``item``, ``timestamp``[, ``type``]).

    Returns:
        The split; ``valid`` has no sessions when ``valid_days`` is None.
    """
    frame = filter_sessions(clicks_only(frame), min_session_length)
    frame = filter_sessions(filter_items(frame, min_item_support), min_session_length)
    if frame.height == 0:
        raise DataError("no sessions left after filtering short sessions and rare items")
    train, test = split_by_last_event(frame, test_days)
    valid = train.clear()
    if valid_days is not None and train.height:
        train, valid = split_by_last_event(train, valid_days)
    return _encode(train, valid, test, min_session_length)


def given_split(
    train: pl.DataFrame,
    test: pl.DataFrame,
    valid: pl.DataFrame | None = None,
    *,
    min_session_length: int = 2,
    valid_ratio: float | None = None,
) -> SessionSplit:
    """Sessions from separately prepared files (session-rec's ``train_tr``/``train_valid``/``test``).

    Each part keeps its clicks and sessions of at least ``min_session_length`` events; the item id map
    is built from train, and valid/test lose events on items not in it, then short sessions. Without a
    ``valid`` frame, ``valid_ratio`` (if given) holds out the sessions of train that end last.
    """
    if valid is None and valid_ratio is not None:
        train, valid = last_sessions(filter_sessions(clicks_only(train), min_session_length), valid_ratio)
    parts = [clicks_only(part) for part in (train, valid if valid is not None else train.clear(), test)]
    return _encode(filter_sessions(parts[0], min_session_length), parts[1], parts[2], min_session_length)


def _encode(train: pl.DataFrame, valid: pl.DataFrame, test: pl.DataFrame, min_length: int) -> SessionSplit:
    if train.height == 0:
        raise DataError("the split left no train sessions")
    item_ids = train["item"].unique().sort()
    return SessionSplit(
        train=Sessions.from_frame(train, item_ids),
        valid=Sessions.from_frame(drop_unseen_items(valid, item_ids, min_length), item_ids),
        test=Sessions.from_frame(drop_unseen_items(test, item_ids, min_length), item_ids),
    )
