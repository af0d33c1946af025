"""A fixed sparse matrix with fast differentiable products ``M x`` and ``M^T y``.

Each product is one ``embedding_bag`` (a weighted sum of rows per CSR row): on this 2-core CPU,
``M @ x`` for Gowalla's normalised ``[29,858 x 40,981]`` interaction matrix (737k entries, d 64)
measured 1.2-1.3 ms, against 3.7-5.9 ms for ``torch.sparse.mm`` on CSR and 7.3 ms for scipy's CSR
product. Autograd's own backward of either is slow (forward + backward 33 ms through
``embedding_bag``, 34-48 ms through the CSR ``mm``), and needless: the gradient of ``M x`` is
``M^T g``, the transpose's forward product, kept here as a second CSR (forward + backward 3.9 ms;
``scripts/graph_products.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SparseMatrix"]


def _csr_product(indices: Tensor, offsets: Tensor, values: Tensor, x: Tensor) -> Tensor:
    """``M @ x`` for a CSR ``M`` given as column ``indices [nnz]``, row ``offsets [rows]`` and
    ``values [nnz]``; ``x [cols, d]`` -> ``[rows, d]`` (empty rows give zeros)."""
    return F.embedding_bag(indices, x, offsets, mode="sum", per_sample_weights=values.to(x.dtype))


class _Product(torch.autograd.Function):
    """``y = M x`` with the backward ``dx = M^T dy`` computed by the transpose's forward product."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, matrix: tuple[Tensor, ...], transpose: tuple[Tensor, ...]) -> Tensor:
        ctx.transpose = transpose
        return _csr_product(*matrix, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _csr_product(*ctx.transpose, grad.contiguous()), None, None


class SparseMatrix(nn.Module):
    """``M`` ``[rows, cols]`` as buffers (not persistent: rebuilt from the data, so checkpoints stay
    small) that move with the model.

    Args:
        matrix: the values of ``M``, any scipy sparse format.
    """

    def __init__(self, matrix: sp.sparray | sp.spmatrix) -> None:
        super().__init__()
        self.shape = matrix.shape
        for name, block in (("m", sp.csr_array(matrix, dtype=np.float32)), ("t", sp.csr_array(matrix.T, dtype=np.float32))):
            block.sum_duplicates()
            block.sort_indices()
            self.register_buffer(f"{name}_indices", torch.from_numpy(block.indices.astype(np.int64)), persistent=False)
            self.register_buffer(f"{name}_offsets", torch.from_numpy(block.indptr[:-1].astype(np.int64)), persistent=False)
            self.register_buffer(f"{name}_values", torch.from_numpy(block.data), persistent=False)

    def _csr(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        return getattr(self, f"{name}_indices"), getattr(self, f"{name}_offsets"), getattr(self, f"{name}_values")

    def matmul(self, x: Tensor) -> Tensor:
        """``M x``: ``x [cols, d]`` -> ``[rows, d]``, differentiable in ``x``."""
        return _Product.apply(x, self._csr("m"), self._csr("t"))

    def transpose_matmul(self, y: Tensor) -> Tensor:
        """``M^T y``: ``y [rows, d]`` -> ``[cols, d]``, differentiable in ``y``."""
        return _Product.apply(y, self._csr("t"), self._csr("m"))
