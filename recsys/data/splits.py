"""Train/validation/test splits, vectorised over all interactions and deterministic for a seed.

- ``random_split``: per user, a random ratio split (RecBole's ``RS`` with ``group_by: user``).
- ``leave_one_out``: per user, the last interaction by time is test, the one before validation.
- ``temporal_split``: one global time cut; the latest interactions are validation and test.
- ``carve_validation``: for given train/test files, a per-user random share of train becomes validation.
"""

from __future__ import annotations

import numpy as np

from recsys.data.interactions import Interactions, Split
from recsys.errors import DataError

__all__ = ["carve_validation", "leave_one_out", "random_split", "ratio_counts", "refit_split", "temporal_split"]


def ratio_counts(totals: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    """How many of each group's ``totals`` go to each part: ``[G] -> [G, P]``.

    RecBole 1.2.1's ``_calcu_split_ids``, vectorised: every part but the first gets
    ``floor(ratio * total)``; the first gets the rest; then, from the last part backwards, a part whose
    share is in (0, 1) takes one interaction from the first part while the first keeps more than one.
    """
    totals = np.asarray(totals, dtype=np.int64)
    ratios_array = np.asarray(ratios, dtype=np.float64)
    ratios_array = ratios_array / ratios_array.sum()
    shares = totals[:, None] * ratios_array[None, :]  # [G, P]
    counts = np.floor(shares).astype(np.int64)
    counts[:, 0] = totals - counts[:, 1:].sum(axis=1)
    for part in range(len(ratios) - 1, 0, -1):
        bump = (counts[:, 0] > 1) & (shares[:, part] > 0) & (shares[:, part] < 1)
        counts[bump, part] += 1
        counts[bump, 0] -= 1
    return counts


def _assign_parts(users: np.ndarray, order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Part index of each interaction, given a within-user ``order`` and per-user part ``counts``.

    Args:
        users: ``[nnz]`` user ids.
        order: ``[nnz]`` permutation sorting interactions by user, then by their within-user order.
        counts: ``[n_users, P]`` interactions per part.

    Returns:
        ``[nnz]`` int8 part index (0 = train, 1 = valid, 2 = test).
    """
    sorted_users = users[order]
    per_user = counts.sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    position = np.arange(len(order)) - starts[sorted_users]  # rank within the user
    bounds = np.cumsum(counts, axis=1)[sorted_users]  # [nnz, P]
    part_sorted = (position[:, None] >= bounds).sum(axis=1).astype(np.int8)
    parts = np.empty(len(order), dtype=np.int8)
    parts[order] = part_sorted
    return parts


def _split_by_parts(data: Interactions, parts: np.ndarray) -> Split:
    return Split(
        train=data.select(parts == 0),
        valid=data.select(parts == 1),
        test=data.select(parts == 2),
    )


def random_split(data: Interactions, ratios: tuple[float, float, float], rng: np.random.Generator) -> Split:
    """Per-user random split of each user's interactions by ``ratios`` (train, valid, test)."""
    keys = rng.random(len(data))
    order = np.lexsort((keys, data.users))
    counts = ratio_counts(data.user_counts(), ratios)
    return _split_by_parts(data, _assign_parts(data.users, order, counts))


def leave_one_out(data: Interactions) -> Split:
    """Per user by time: the last interaction is test, the second-to-last validation.

    Users with two interactions give one to test; users with one keep it in train.
    """
    if data.timestamps is None:
        raise DataError("leave-one-out needs timestamps, and the data has none")
    order = np.lexsort((np.arange(len(data)), data.timestamps, data.users))
    totals = data.user_counts()
    counts = np.zeros((data.n_users, 3), dtype=np.int64)
    counts[:, 2] = totals >= 2
    counts[:, 1] = totals >= 3
    counts[:, 0] = totals - counts[:, 1] - counts[:, 2]
    return _split_by_parts(data, _assign_parts(data.users, order, counts))


def temporal_split(data: Interactions, ratios: tuple[float, float, float]) -> Split:
    """One global cut by time: the earliest share is train, then validation, then test."""
    if data.timestamps is None:
        raise DataError("a temporal split needs timestamps, and the data has none")
    order = np.argsort(data.timestamps, kind="stable")
    counts = ratio_counts(np.array([len(data)]), ratios)[0]
    parts = np.empty(len(data), dtype=np.int8)
    parts[order] = np.repeat(np.arange(3, dtype=np.int8), counts)
    return _split_by_parts(data, parts)


def carve_validation(
    train: Interactions, test: Interactions, valid_ratio: float, rng: np.random.Generator
) -> Split:
    """Given train and test: a per-user random ``valid_ratio`` of each user's train becomes validation."""
    keys = rng.random(len(train))
    order = np.lexsort((keys, train.users))
    counts = ratio_counts(train.user_counts(), (1.0 - valid_ratio, valid_ratio))
    parts = _assign_parts(train.users, order, counts)
    return Split(train=train.select(parts == 0), valid=train.select(parts == 1), test=test)


def refit_split(split: Split) -> Split:
    """The split for refitting on all training data: train becomes train and validation together.

    Validation stays as it was, inside train now, so it is no longer a held-out measure (a refit does not
    validate); test, its masking of train and validation items, and the exposure are unchanged.
    """
    return Split(train=split.train.union(split.valid), valid=split.valid, test=split.test, exposure=split.exposure)
