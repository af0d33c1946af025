"""Interactions: an immutable set of (user, item) pairs with contiguous ids, and a split of them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.errors import DataError

__all__ = ["Interactions", "Split"]


@dataclass(frozen=True, eq=False)
class Interactions:
    """Implicit feedback: ``nnz`` distinct (user, item) pairs over contiguous 0-based ids.

    Attributes:
        users: ``[nnz]`` int32 user ids in ``[0, n_users)``.
        items: ``[nnz]`` int32 item ids in ``[0, n_items)``.
        n_users, n_items: sizes of the id spaces (shared by every part of a split).
        user_ids: original user id of each internal id (position = internal id).
        item_ids: original item id of each internal id.
        timestamps: ``[nnz]`` float64, or None when the source has none.
        ratings: ``[nnz]`` float32, or None when the source has none.
    """

    users: np.ndarray
    items: np.ndarray
    n_users: int
    n_items: int
    user_ids: pl.Series
    item_ids: pl.Series
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None

    def __post_init__(self) -> None:
        nnz = len(self.users)
        if len(self.items) != nnz:
            raise ValueError(f"users ({nnz}) and items ({len(self.items)}) differ in length")
        for name in ("timestamps", "ratings"):
            column = getattr(self, name)
            if column is not None and len(column) != nnz:
                raise ValueError(f"{name} ({len(column)}) and users ({nnz}) differ in length")
        if len(self.user_ids) != self.n_users or len(self.item_ids) != self.n_items:
            raise ValueError("id maps do not match n_users / n_items")
        if nnz and (self.users.min() < 0 or self.users.max() >= self.n_users):
            raise ValueError("user id out of range")
        if nnz and (self.items.min() < 0 or self.items.max() >= self.n_items):
            raise ValueError("item id out of range")
        for array in (self.users, self.items, self.timestamps, self.ratings):
            if array is not None:
                array.flags.writeable = False

    def __len__(self) -> int:
        return len(self.users)

    @property
    def density(self) -> float:
        return len(self) / max(1, self.n_users * self.n_items)

    @cached_property
    def _csr(self) -> sp.csr_array:
        matrix = sp.csr_array(
            (np.ones(len(self), dtype=np.float32), (self.users, self.items)),
            shape=(self.n_users, self.n_items),
        )
        matrix.sum_duplicates()
        matrix.sort_indices()
        return matrix

    def csr(self) -> sp.csr_array:
        """The ``[n_users, n_items]`` 0/1 matrix (cached; sorted column indices per row)."""
        return self._csr

    def item_counts(self) -> np.ndarray:
        """``[n_items]`` int64, interactions per item."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        """``[n_users]`` int64, interactions per user."""
        return np.bincount(self.users, minlength=self.n_users).astype(np.int64)

    def select(self, mask: np.ndarray) -> Interactions:
        """The interactions where ``mask [nnz]`` is True, with the same id spaces."""
        return Interactions(
            users=self.users[mask],
            items=self.items[mask],
            n_users=self.n_users,
            n_items=self.n_items,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            timestamps=None if self.timestamps is None else self.timestamps[mask],
            ratings=None if self.ratings is None else self.ratings[mask],
        )

    def union(self, other: Interactions) -> Interactions:
        """Both sets of pairs (same id spaces), for masking train and validation items together."""
        if other.n_users != self.n_users or other.n_items != self.n_items:
            raise ValueError("cannot join interactions over different id spaces")
        both_time = self.timestamps is not None and other.timestamps is not None
        both_rating = self.ratings is not None and other.ratings is not None
        return Interactions(
            users=np.concatenate([self.users, other.users]),
            items=np.concatenate([self.items, other.items]),
            n_users=self.n_users,
            n_items=self.n_items,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            timestamps=np.concatenate([self.timestamps, other.timestamps]) if both_time else None,
            ratings=np.concatenate([self.ratings, other.ratings]) if both_rating else None,
        )


@dataclass(frozen=True, eq=False)
class Split:
    """Train, validation and test interactions over one id space.

    ``exposure``, when the test set was randomly exposed (Yahoo! R3, Coat), holds every exposed test
    pair with its rating; ``test`` is then its relevant part (rating >= the threshold).
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    exposure: Interactions | None = None

    def __post_init__(self) -> None:
        for name in ("valid", "test", "exposure"):
            part = getattr(self, name)
            if part is None:
                continue
            if part.n_users != self.train.n_users or part.n_items != self.train.n_items:
                raise ValueError(f"{name} has a different id space than train")
        for name in ("train", "valid", "test"):
            if len(getattr(self, name)) == 0:
                raise DataError(f"the split left no {name} interactions")

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def parts(self) -> dict[str, Interactions]:
        """train, valid, test (and exposure, when there is one)."""
        parts = {"train": self.train, "valid": self.valid, "test": self.test}
        if self.exposure is not None:
            parts["exposure"] = self.exposure
        return parts
