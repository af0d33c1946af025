"""Preprocessing on polars frames ``(user, item[, rating][, timestamp])``, before ids are encoded."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.data.interactions import Interactions
from recsys.errors import DataError

__all__ = ["collapse_duplicates", "encode", "k_core", "to_implicit"]


def to_implicit(frame: pl.DataFrame, threshold: float | None, source: str) -> pl.DataFrame:
    """Keep interactions with ``rating >= threshold`` (all of them when threshold is None)."""
    if threshold is None:
        return frame
    if "rating" not in frame.columns:
        raise DataError(f"{source}: a rating threshold is set but the data has no rating column")
    return frame.filter(pl.col("rating") >= threshold)


def collapse_duplicates(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (user, item): the earliest one when there are timestamps, else the first."""
    if "timestamp" in frame.columns:
        frame = frame.sort("timestamp", maintain_order=True)
    return frame.unique(subset=["user", "item"], keep="first", maintain_order=True)


def k_core(frame: pl.DataFrame, min_user: int, min_item: int) -> pl.DataFrame:
    """Iteratively drop users with < ``min_user`` and items with < ``min_item`` interactions.

    Repeats until both conditions hold at once (removing items can push users below the bound).
    """
    if min_user <= 1 and min_item <= 1:
        return frame
    while True:
        kept = frame.filter(
            (pl.len().over("user") >= min_user) & (pl.len().over("item") >= min_item)
        )
        if kept.height == frame.height:
            return kept
        frame = kept


def encode(frames: dict[str, pl.DataFrame]) -> dict[str, Interactions]:
    """Map original ids to contiguous 0-based ids shared by all frames (sorted by original id).

    Args:
        frames: part name -> frame; all parts get one user and one item id space.

    Returns:
        part name -> Interactions, in the order given.
    """
    everything = pl.concat([f.select("user", "item") for f in frames.values()])
    user_ids = everything["user"].unique().sort()
    item_ids = everything["item"].unique().sort()
    if user_ids.len() == 0:
        raise DataError("no interactions left after filtering")
    parts: dict[str, Interactions] = {}
    for name, frame in frames.items():
        users = np.searchsorted(user_ids.to_numpy(), frame["user"].to_numpy()).astype(np.int32)
        items = np.searchsorted(item_ids.to_numpy(), frame["item"].to_numpy()).astype(np.int32)
        parts[name] = Interactions(
            users=users,
            items=items,
            n_users=user_ids.len(),
            n_items=item_ids.len(),
            user_ids=user_ids,
            item_ids=item_ids,
            timestamps=frame["timestamp"].to_numpy() if "timestamp" in frame.columns else None,
            ratings=frame["rating"].cast(pl.Float32).to_numpy() if "rating" in frame.columns else None,
        )
    return parts
