"""Sessions: immutable event sequences over contiguous item ids, and a train/valid/test split of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data.interactions import Interactions
from recsys.errors import DataError

__all__ = ["SessionSplit", "Sessions"]


@dataclass(frozen=True, eq=False)
class Sessions:
    """Sessions stored CSR-style: session ``s`` is ``items[offsets[s]:offsets[s + 1]]``, in time order.

    Attributes:
        items: ``[n_events]`` int64 item ids in ``[0, n_items)``.
        offsets: ``[n_sessions + 1]`` int64, non-decreasing, from 0 to ``n_events``.
        timestamps: ``[n_events]`` float64 seconds, non-decreasing within each session.
        session_ids: ``[n_sessions]`` original session id of each session.
        item_ids: ``[n_items]`` original item id of each internal id (position = internal id); one map is
            shared by every part of a split.
        n_items: size of the item id space.
    """

    items: np.ndarray
    offsets: np.ndarray
    timestamps: np.ndarray
    session_ids: pl.Series
    item_ids: pl.Series
    n_items: int

    def __post_init__(self) -> None:
        n_events = len(self.items)
        if len(self.timestamps) != n_events:
            raise ValueError(f"items ({n_events}) and timestamps ({len(self.timestamps)}) differ in length")
        if len(self.offsets) != len(self.session_ids) + 1:
            raise ValueError("offsets must have one entry more than session_ids")
        if self.offsets[0] != 0 or self.offsets[-1] != n_events or (np.diff(self.offsets) < 0).any():
            raise ValueError("offsets must rise from 0 to n_events")
        if len(self.item_ids) != self.n_items:
            raise ValueError("item_ids does not match n_items")
        if n_events and (self.items.min() < 0 or self.items.max() >= self.n_items):
            raise ValueError("item id out of range")
        for array in (self.items, self.offsets, self.timestamps):
            array.flags.writeable = False

    def __len__(self) -> int:
        """Number of sessions."""
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    def lengths(self) -> np.ndarray:
        """``[n_sessions]`` int64 events per session."""
        return np.diff(self.offsets)

    def interactions(self) -> Interactions:
        """The distinct (session, item) pairs, sessions as users: what a sampler reads to reject a
        session's own items (``exclude_positives``) or to count item frequencies."""
        sessions = np.repeat(np.arange(len(self), dtype=np.int64), self.lengths())
        keys = np.unique(sessions * self.n_items + self.items)
        return Interactions(
            users=(keys // self.n_items).astype(np.int32),
            items=(keys % self.n_items).astype(np.int32),
            n_users=len(self),
            n_items=self.n_items,
            user_ids=self.session_ids,
            item_ids=self.item_ids,
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, item_ids: pl.Series) -> Sessions:
        """Encode a ``(session, item, timestamp)`` frame; events are ordered by (session, timestamp), stably.

        Args:
            frame: events; every ``item`` must be in ``item_ids``.
            item_ids: sorted original item ids; internal id = position.
        """
        # Readers sort already; a frame built by hand or filtered elsewhere may not be.
        frame = frame.sort("session", "timestamp", maintain_order=True)
        sessions = frame["session"].to_numpy()
        # A new session starts wherever the (sorted) session id changes.
        starts = np.flatnonzero(np.diff(sessions) != 0) + 1
        offsets = np.concatenate([[0], starts, [len(sessions)]]) if len(sessions) else np.zeros(1)
        known = item_ids.to_numpy()
        items = np.searchsorted(known, frame["item"].to_numpy())
        if len(items) and (items.max() >= len(known) or (known[items] != frame["item"].to_numpy()).any()):
            raise ValueError("an item of the frame is not in item_ids")
        return cls(
            items=items.astype(np.int64),
            offsets=offsets.astype(np.int64),
            timestamps=frame["timestamp"].to_numpy().astype(np.float64),
            session_ids=frame["session"].gather(offsets[:-1].astype(np.int64)),
            item_ids=item_ids,
            n_items=item_ids.len(),
        )


@dataclass(frozen=True, eq=False)
class SessionSplit:
    """Train, validation and test sessions over one item id space.

    ``valid`` has no sessions when no validation set was asked for (TRON trains on train, tests on test).
    """

    train: Sessions
    valid: Sessions
    test: Sessions

    def __post_init__(self) -> None:
        for name in ("valid", "test"):
            if not getattr(self, name).item_ids.equals(self.train.item_ids):
                raise ValueError(f"{name} has a different item id map than train")
        for name in ("train", "test"):
            if len(getattr(self, name)) == 0:
                raise DataError(f"the split left no {name} sessions")

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def parts(self) -> dict[str, Sessions]:
        return {"train": self.train, "valid": self.valid, "test": self.test}
