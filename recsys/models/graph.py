"""The normalised user-item graph of graph models.

``A~ = D^-1/2 A D^-1/2`` of the bipartite graph ``A = [[0, R], [R^T, 0]]`` (``R`` the ``[U, I]``
training matrix, ``D`` the node degrees) is stored as its block ``R~ = D_u^-1/2 R D_i^-1/2`` (a
``SparseMatrix``, which also multiplies by its transpose), so one propagation
``A~ [E_u; E_i] = [R~ E_i; R~^T E_u]`` touches each edge twice and never multiplies the zero blocks.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from torch import Tensor, nn

from recsys.data.interactions import Interactions
from recsys.models.sparse import SparseMatrix

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
    return normalized, sp.csr_array(normalized.T)


class NormalizedBipartiteGraph(nn.Module):
    """``A~`` of the training interactions, as buffers that move with the model.

    Args:
        train: the training interactions (``U`` users, ``I`` items).
    """

    def __init__(self, train: Interactions) -> None:
        super().__init__()
        self.n_users, self.n_items = train.n_users, train.n_items
        self.block = SparseMatrix(normalized_blocks(train)[0])

    def propagate(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """One layer ``A~ [E_u; E_i]``: ``users [U, d]``, ``items [I, d]`` -> ``(R~ E_i [U, d],
        R~^T E_u [I, d])``, differentiable in both inputs."""
        return self.block.matmul(items), self.block.transpose_matmul(users)
