"""Each user's training items, the behaviour sequences of history-based models."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from recsys.data.interactions import Interactions

__all__ = ["UserHistories"]


class UserHistories(nn.Module):
    """Per-user training items, at most ``max_len`` each, stored as CSR buffers; a batch's histories
    come out ragged (``flat``).

    A user's history keeps their latest ``max_len`` items where the data has timestamps, else the
    last ``max_len`` in the order of the training interactions.

    Args:
        train: the training interactions.
        max_len: the cap per user.
    """

    def __init__(self, train: Interactions, max_len: int) -> None:
        super().__init__()
        users = train.users.astype(np.int64)
        within = train.timestamps if train.timestamps is not None else np.arange(len(users))
        order = np.lexsort((within, users))  # by user, then time (or file order)
        users, items = users[order], train.items.astype(np.int64)[order]
        counts = np.bincount(users, minlength=train.n_users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.arange(len(users)) - starts[users]  # 0-based rank within the user
        keep = position >= (counts - max_len)[users]
        kept = np.minimum(counts, max_len)
        self.register_buffer("items", torch.from_numpy(items[keep]), persistent=False)
        self.register_buffer(
            "offsets", torch.from_numpy(np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)), persistent=False
        )

    def flat(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """``users [B]`` -> the batch's history entries, ragged: ``items [T]`` and ``rows [T]`` (the
        position in ``users`` each entry belongs to), ``T`` the sum of the users' history lengths.

        Ragged rather than padded: a batch costs its real entries, not ``B x`` its longest history
        (on ml-100k, 174k entries against a padded 1M)."""
        starts = self.offsets[users]  # [B]
        lengths = self.offsets[users + 1] - starts  # [B]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)  # [T]
        # Entry t of row b sits at starts[b] + (t - first entry of row b).
        firsts = torch.cumsum(lengths, 0) - lengths  # [B]
        index = starts[rows] + torch.arange(len(rows), device=users.device) - firsts[rows]
        return self.items[index], rows
