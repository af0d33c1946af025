"""Which (user, item) pairs are known positives, asked for a whole batch at once."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

__all__ = ["PositiveSet"]

# The largest bitmap (bytes) kept for O(1) lookups; larger matrices fall back to sorted keys.
_BITMAP_BYTES = 256 * 2**20


class PositiveSet(nn.Module):
    """Membership of (user, item) pairs in a sparse matrix, vectorised over a batch.

    Where ``n_users * n_items`` bits fit in 256 MiB (ml-100k: 0.2 MiB, Gowalla: 146 MiB) a packed
    bitmap answers with one gather and a few bit operations per pair; otherwise sorted keys
    ``user * n_items + item`` answer with one ``searchsorted`` (random branches: about 50 ns per pair
    on this CPU, several times the bitmap). Both are buffers, so they move with the model.

    Args:
        matrix: ``[n_users, n_items]`` CSR of the positives.
        bitmap_bytes: the largest bitmap to build.
    """

    def __init__(self, matrix: sp.csr_array, bitmap_bytes: int = _BITMAP_BYTES) -> None:
        super().__init__()
        matrix = sp.csr_array(matrix)
        matrix.sum_duplicates()
        matrix.sort_indices()
        n_users, self.n_items = matrix.shape
        rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(matrix.indptr))
        keys = rows * self.n_items + matrix.indices.astype(np.int64)  # sorted: rows, then columns
        size = -(-n_users * self.n_items // 8)
        bits = None
        if size <= bitmap_bytes:
            flags = np.zeros(size * 8, dtype=bool)
            flags[keys] = True
            bits = torch.from_numpy(np.packbits(flags, bitorder="little"))
        self.register_buffer("_bits", bits, persistent=False)
        self.register_buffer("_keys", None if bits is not None else torch.from_numpy(keys), persistent=False)
        self._count = len(keys)

    def __len__(self) -> int:
        return self._count

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """``users`` broadcastable with ``items`` -> bool of their broadcast shape: is (user, item) a
        positive."""
        keys = users * self.n_items + items
        if self._bits is not None:
            byte = self._bits[keys >> 3]
            return ((byte >> (keys & 7).to(torch.uint8)) & 1).bool()
        if self._count == 0:
            return torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
        position = torch.searchsorted(self._keys, keys).clamp_(max=self._count - 1)
        return self._keys[position] == keys
