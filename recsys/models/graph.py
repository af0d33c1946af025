"""The normalised user-item graph of graph models.

``A~ = D^-1/2 A D^-1/2`` of the bipartite graph ``A = [[0, R], [R^T, 0]]`` (``R`` the ``[U, I]``
training matrix, ``D`` the node degrees) is stored as its block ``R~ = D_u^-1/2 R D_i^-1/2`` (a
``SparseMatrix``, which also multiplies by its transpose), so one propagation
``A~ [E_u; E_i] = [R~ E_i; R~^T E_u]`` touches each edge twice and never multiplies the zero blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

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

    def layer_mean(self, users: Tensor, items: Tensor, layers: int) -> tuple[Tensor, Tensor]:
        """LightGCN's final embeddings ``1/(K+1) sum_{k=0..K} A~^k [E_u; E_i]``: ``users [U, d]``,
        ``items [I, d]`` -> the same shapes, differentiable in both (``_LayerMean``)."""
        return _LayerMean.apply(users, items, self, layers)


class _LayerMean(torch.autograd.Function):
    """``E = 1/(K+1) sum_k A~^k E^0`` with the backward ``dE^0 = 1/(K+1) sum_k A~^k G`` (``A~`` is
    symmetric), by Horner's rule: ``H = G; K times: H = G + A~ H``.

    Autograd through the layer loop keeps every layer and spends an extra elementwise pass on each
    sum, scale and gradient accumulation, over the whole tables; here the forward sums in place, the
    backward keeps nothing from it, and each layer costs one product and one add in either direction.
    """

    @staticmethod
    def forward(ctx: Any, users: Tensor, items: Tensor, graph: NormalizedBipartiteGraph,
                layers: int) -> tuple[Tensor, Tensor]:
        ctx.graph, ctx.layers = graph, layers
        user_sum, item_sum = users.clone(), items.clone()
        layer_users, layer_items = users, items
        for _ in range(layers):
            layer_users, layer_items = graph.propagate(layer_users, layer_items)
            user_sum.add_(layer_users)
            item_sum.add_(layer_items)
        scale = 1.0 / (layers + 1)
        return user_sum.mul_(scale), item_sum.mul_(scale)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_users: Tensor, grad_items: Tensor) -> tuple[Tensor, Tensor, None, None]:
        graph, layers = ctx.graph, ctx.layers
        grad_users, grad_items = grad_users.contiguous(), grad_items.contiguous()
        scale = 1.0 / (layers + 1)
        if layers == 0:
            return grad_users * scale, grad_items * scale, None, None
        sum_users, sum_items = grad_users, grad_items
        for _ in range(layers):
            sum_users, sum_items = graph.propagate(sum_users, sum_items)  # fresh tensors
            sum_users.add_(grad_users)
            sum_items.add_(grad_items)
        return sum_users.mul_(scale), sum_items.mul_(scale), None, None
