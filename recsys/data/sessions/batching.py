"""Session batches for next-item prediction: left-padded windows of each session's last events.

Item ids are shifted by one so that 0 is padding: a model's embedding table has ``n_items + 1`` rows and
row 0 is the padding row. A batch is ``(inputs [B, L], targets [B, L])``: the target at a position is
the item that follows the input there (SASRec / TRON train on every position at once), 0 where there
is none. Rows are gathered per batch from the CSR arrays with one vectorised indexing, so no
``[n_sessions, L]`` table is held in memory (12 M OTTO sessions x 51 x 8 bytes would be 5 GB).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from recsys.data.sessions.sessions import Sessions

__all__ = ["ShuffledSessions", "last_events", "next_item_pairs"]


def last_events(sessions: Sessions, max_len: int = 50, rows: Tensor | None = None) -> Tensor:
    """Each session's last ``max_len`` events, left-padded.

    Args:
        sessions: the sessions.
        max_len: window length; longer sessions keep their latest events.
        rows: ``[R]`` long session indices (default: all sessions, in order).

    Returns:
        ``[R, max_len]`` long: item id + 1, 0 before a session's first event.
    """
    if rows is None:
        rows = torch.arange(len(sessions))
    return _last_events(_shifted_items(sessions), torch.from_numpy(sessions.offsets.copy()), rows, max_len)


def next_item_pairs(padded: Tensor) -> tuple[Tensor, Tensor]:
    """Next-item training pairs at every position of left-padded windows.

    Args:
        padded: ``[R, L + 1]`` long from ``last_events``.

    Returns:
        ``inputs [R, L]`` = ``padded[:, :-1]`` and ``targets [R, L]`` = ``padded[:, 1:]``, with target 0
        wherever the input is padding (where the target is padding, so is the input: padding is on
        the left).
    """
    inputs, following = padded[:, :-1], padded[:, 1:]
    return inputs, torch.where(inputs > 0, following, 0)


class ShuffledSessions:
    """An iterable of ``(sessions [b], inputs [b, max_len], targets [b, max_len])`` long batches, one row
    per session; ``sessions`` are the rows' session indices (a sampler rejects a session's own items
    by them).

    Each row holds a session's last ``max_len + 1`` events, so ``max_len`` is the model's input length.
    Epoch ``e`` visits the sessions in the permutation of a generator seeded with ``seed + e`` (as
    ``recsys.data.batching.ShuffledPairs`` does), or in stored order when ``shuffle`` is False (for
    evaluation, where every non-zero target is one next-item prediction to rank).

    Args:
        sessions: the sessions.
        batch_size: sessions per batch (the last batch may be smaller).
        max_len: input length L.
        seed: base seed.
        shuffle: False keeps the stored order.
    """

    def __init__(self, sessions: Sessions, batch_size: int, max_len: int = 50, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.table = _shifted_items(sessions)
        self.offsets = torch.from_numpy(sessions.offsets.copy())
        self.n_sessions = len(sessions)
        self.batch_size = batch_size
        self.max_len = max_len
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.n_sessions // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n_sessions, generator=generator)
        else:
            order = torch.arange(self.n_sessions)
        self.epoch += 1
        for rows in order.split(self.batch_size):
            yield (rows, *next_item_pairs(_last_events(self.table, self.offsets, rows, self.max_len + 1)))


def _shifted_items(sessions: Sessions) -> Tensor:
    """``[n_events + 1]`` long: 0, then every item id + 1, so index 0 reads as padding."""
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.from_numpy(sessions.items + 1)])


def _last_events(table: Tensor, offsets: Tensor, rows: Tensor, length: int) -> Tensor:
    """``[R, length]``: ``table`` entries of each row's last ``length`` events, 0 before its start."""
    starts, ends = offsets[rows], offsets[rows + 1]  # [R]
    positions = ends[:, None] - length + torch.arange(length)  # [R, length] event indices, right-aligned
    inside = positions >= starts[:, None]
    # +1 skips the padding entry of `table`; positions before the session read entry 0.
    return table[torch.where(inside, positions + 1, 0)]
