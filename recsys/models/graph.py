"""The normalised user-item graph of graph models, and its fast differentiable product.

``A~ = D^-1/2 A D^-1/2`` of the bipartite graph ``A = [[0, R], [R^T, 0]]`` (``R`` the ``[U, I]``
training matrix, ``D`` the node degrees) is stored as its two blocks ``R~ = D_u^-1/2 R D_i^-1/2`` and
``R~^T``, so one propagation ``A~ [E_u; E_i] = [R~ E_i; R~^T E_u]`` touches each edge twice and never
multiplies the zero blocks.

Each block product is one ``embedding_bag`` (a weighted sum of rows per CSR row): on this 2-core CPU,
``R~ @ E_i`` on gowalla (737k edges, d 64) measured 1.3 ms, against 7 ms for scipy's CSR product and
36 ms for ``torch.sparse.mm`` on CSR. Autograd's own backward of either is slow (``embedding_bag``
73 ms; the CSR ``mm`` ~8x its forward), and needless: the gradient of ``R~ x`` is ``R~^T g``, the
other block's forward product, so ``_BlockProduct`` reuses it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.data.interactions import Interactions

__all__ = ["NormalizedBipartiteGraph", "normalized_blocks"]


def normalized_blocks(train: Interactions) -> tuple[sp.csr_array, sp.csr_array]:
    """``R~ = D_u^-1/2 R D_i^-1/2`` ``[U, I]`` and its transpose ``[I, U]``, both CSR, float32.

    Nodes without edges get degree 1 (their rows are empty either way), as in the reference
    implementations, which zero the infinite inverse degrees.
    """
    matrix = train.csr().astype(np.float32)
    user_degree = np.maximum(np.asarray(matrix.sum(axis=1)).ravel(), 1.0)
    item_degree = np.maximum(np.asarray(matrix.sum(axis=0)).ravel(), 1.0)
    normalized = sp.csr_array(
        sp.diags_array(user_degree**-0.5) @ matrix @ sp.diags_array(item_degree**-0.5), dtype=np.float32
    )
    normalized.sort_indices()
    transposed = sp.csr_array(normalized.T)
    transposed.sort_indices()
    return normalized, transposed


def _csr_product(indices: Tensor, offsets: Tensor, values: Tensor, x: Tensor) -> Tensor:
    """``M @ x`` for a CSR ``M`` given as column ``indices [nnz]``, row ``offsets [rows]`` and
    ``values [nnz]``; ``x [cols, d]`` -> ``[rows, d]`` (empty rows give zeros)."""
    return F.embedding_bag(indices, x, offsets, mode="sum", per_sample_weights=values.to(x.dtype))


class _BlockProduct(torch.autograd.Function):
    """``y = M x`` with the backward ``dx = M^T dy`` computed by the transpose's forward product."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, forward: tuple[Tensor, ...], backward: tuple[Tensor, ...]) -> Tensor:
        ctx.backward_matrix = backward
        return _csr_product(*forward, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _csr_product(*ctx.backward_matrix, grad.contiguous()), None, None


class NormalizedBipartiteGraph(nn.Module):
    """``A~`` of the training interactions, as buffers that move with the model.

    Args:
        train: the training interactions (``U`` users, ``I`` items).
    """

    def __init__(self, train: Interactions) -> None:
        super().__init__()
        self.n_users, self.n_items = train.n_users, train.n_items
        for name, block in zip(("user", "item"), normalized_blocks(train), strict=True):
            # Not persistent: the graph is rebuilt from the data, and checkpoints stay small.
            self.register_buffer(f"{name}_indices", torch.from_numpy(block.indices.astype(np.int64)), persistent=False)
            self.register_buffer(f"{name}_offsets", torch.from_numpy(block.indptr[:-1].astype(np.int64)), persistent=False)
            self.register_buffer(f"{name}_values", torch.from_numpy(block.data), persistent=False)

    def _block(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        return getattr(self, f"{name}_indices"), getattr(self, f"{name}_offsets"), getattr(self, f"{name}_values")

    def propagate(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """One layer ``A~ [E_u; E_i]``: ``users [U, d]``, ``items [I, d]`` -> ``(R~ E_i [U, d],
        R~^T E_u [I, d])``, differentiable in both inputs."""
        users_rows, items_rows = self._block("user"), self._block("item")
        return (
            _BlockProduct.apply(items, users_rows, items_rows),
            _BlockProduct.apply(users, items_rows, users_rows),
        )
