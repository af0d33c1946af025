"""Each user's training items, the behaviour sequences of history-based models."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from recsys.data.interactions import Interactions
from recsys.samplers.positives import PositiveSet

__all__ = ["UserHistories"]


class UserHistories(nn.Module):
    """Per-user training items, at most ``max_len`` each, stored as CSR buffers.

    A user's history keeps their latest ``max_len`` items where the data has timestamps, else the
    last ``max_len`` in the order of the training interactions. A batch's histories come out ragged
    (``flat``); ``contains`` says whether a (user, item) pair is in the kept history, and
    ``mean_matrix`` is the row-normalised ``[U, I]`` history matrix (each row averages a history).

    Args:
        train: the training interactions.
        max_len: the cap per user.
    """

    def __init__(self, train: Interactions, max_len: int) -> None:
        super().__init__()
        self.n_users, self.n_items = train.n_users, train.n_items
        users = train.users.astype(np.int64)
        within = train.timestamps if train.timestamps is not None else np.arange(len(users))
        order = np.lexsort((within, users))  # by user, then time (or file order)
        users, items = users[order], train.items.astype(np.int64)[order]
        counts = np.bincount(users, minlength=train.n_users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.arange(len(users)) - starts[users]  # 0-based rank within the user
        keep = position >= (counts - max_len)[users]
        users, items = users[keep], items[keep]
        kept = np.minimum(counts, max_len)
        self.register_buffer("items", torch.from_numpy(items), persistent=False)
        self.register_buffer("offsets", torch.from_numpy(np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)),
                             persistent=False)
        self.register_buffer("lengths", torch.from_numpy(kept.astype(np.int64)), persistent=False)
        self.members = PositiveSet(self._matrix(np.ones(len(items), dtype=np.float32)), backend="keys")

    def flat(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """``users [B]`` -> the batch's history entries, ragged: ``items [T]`` and ``rows [T]`` (the
        position in ``users`` each entry belongs to), ``T`` the sum of the users' history lengths."""
        starts = self.offsets[users]  # [B]
        lengths = self.lengths[users]  # [B]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)  # [T]
        # Entry t of row b sits at starts[b] + (t - first entry of row b).
        firsts = torch.cumsum(lengths, 0) - lengths  # [B]
        index = starts[rows] + torch.arange(len(rows), device=users.device) - firsts[rows]
        return self.items[index], rows

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """``users [B]``, ``items [B]`` -> bool ``[B]``: is the item in the user's kept history."""
        return self.members.contains(users, items)

    def mean_matrix(self) -> sp.csr_array:
        """``[U, I]`` with ``1 / |H_u|`` at each of user ``u``'s history items."""
        lengths = self.lengths.cpu().numpy()
        return self._matrix(np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32))

    def _matrix(self, values: np.ndarray) -> sp.csr_array:
        """``[U, I]`` CSR with ``values [T]`` at the kept history entries (rows in user order)."""
        # Copies: scipy may sort the indices in place, and the buffers keep history (time) order.
        indices, indptr = self.items.cpu().numpy().copy(), self.offsets.cpu().numpy().copy()
        return sp.csr_array((values, indices, indptr), shape=(self.n_users, self.n_items))
