"""A fixed sparse matrix with fast differentiable products ``M x`` and ``M^T y``.

Autograd's own backward of a sparse product is slow and needless: the gradient of ``M x`` is
``M^T g``, the transpose's forward product, so ``M^T`` is kept as a second CSR and the backward is one
more forward product. The forward product has two kernels, chosen by device (``scripts/graph_products.py``,
Gowalla's normalised ``[29,858 x 40,981]`` interaction matrix, 737k entries, d 64):

- ``embedding_bag`` (a weighted sum of rows per CSR row), the CPU's: on this 2-core CPU ``M @ x``
  measured 1.2-2.2 ms, against 3.7-7.0 ms for ``torch.sparse.mm`` on CSR and 7.3-10.7 ms for scipy's
  CSR product; forward + backward 3.9-5.2 ms here, against 34-50 ms through autograd's backward of
  either.
- ``csr`` (``torch.sparse.mm`` on a CSR tensor, cuSPARSE), the GPU's: on an H200 ``M @ x`` measured
  0.1 ms against 0.3 ms for ``embedding_bag`` (two runs, 2026-11-28); autograd's backward of
  ``torch.sparse.mm`` took 1.1 ms there, the transpose's product 0.1 ms.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KERNELS", "SparseMatrix"]

Kernel = Literal["auto", "embedding_bag", "csr"]
KERNELS: tuple[str, ...] = ("auto", "embedding_bag", "csr")
Csr = tuple[Tensor, Tensor, Tensor]  # row offsets [rows + 1], column indices [nnz], values [nnz]


def _embedding_bag_product(matrix: Csr, x: Tensor) -> Tensor:
    """``M @ x`` as one ``embedding_bag``: ``x [cols, d]`` -> ``[rows, d]`` (empty rows give zeros)."""
    indptr, indices, values = matrix
    return F.embedding_bag(indices, x, indptr, mode="sum", per_sample_weights=values.to(x.dtype),
                           include_last_offset=True)


def _csr_product(matrix: Csr, x: Tensor) -> Tensor:
    """``M @ x`` as ``torch.sparse.mm`` of a CSR tensor viewing the buffers (no copy)."""
    indptr, indices, values = matrix
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = torch.sparse_csr_tensor(indptr, indices, values.to(x.dtype), size=(len(indptr) - 1, x.shape[0]))
    return torch.sparse.mm(csr, x)


_PRODUCTS = {"embedding_bag": _embedding_bag_product, "csr": _csr_product}


def resolve_kernel(kernel: Kernel, x: Tensor) -> str:
    """The kernel ``auto`` stands for on ``x``'s device: ``csr`` on CUDA, ``embedding_bag`` elsewhere."""
    if kernel != "auto":
        return kernel
    return "csr" if x.is_cuda else "embedding_bag"


class _Product(torch.autograd.Function):
    """``y = M x`` with the backward ``dx = M^T dy`` computed by the transpose's forward product."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, matrix: Csr, transpose: Csr, kernel: str) -> Tensor:
        ctx.transpose, ctx.kernel = transpose, kernel
        return _PRODUCTS[kernel](matrix, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        return _PRODUCTS[ctx.kernel](ctx.transpose, grad.contiguous()), None, None, None


class SparseMatrix(nn.Module):
    """``M`` ``[rows, cols]`` as buffers (not persistent: rebuilt from the data, so checkpoints stay
    small) that move with the model.

    Args:
        matrix: the values of ``M``, any scipy sparse format.
        kernel: the forward product (module docstring): ``auto`` picks by the operand's device.
    """

    def __init__(self, matrix: sp.sparray | sp.spmatrix, kernel: Kernel = "auto") -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel {kernel!r}: choose one of {', '.join(KERNELS)}")
        self.shape = matrix.shape
        self.kernel: Kernel = kernel
        for name, block in (("m", sp.csr_array(matrix, dtype=np.float32)), ("t", sp.csr_array(matrix.T, dtype=np.float32))):
            block.sum_duplicates()
            block.sort_indices()
            self.register_buffer(f"{name}_indptr", torch.from_numpy(block.indptr.astype(np.int64)), persistent=False)
            self.register_buffer(f"{name}_indices", torch.from_numpy(block.indices.astype(np.int64)), persistent=False)
            self.register_buffer(f"{name}_values", torch.from_numpy(block.data), persistent=False)

    def _csr(self, name: str) -> Csr:
        return getattr(self, f"{name}_indptr"), getattr(self, f"{name}_indices"), getattr(self, f"{name}_values")

    def matmul(self, x: Tensor) -> Tensor:
        """``M x``: ``x [cols, d]`` -> ``[rows, d]``, differentiable in ``x``."""
        return _Product.apply(x, self._csr("m"), self._csr("t"), resolve_kernel(self.kernel, x))

    def transpose_matmul(self, y: Tensor) -> Tensor:
        """``M^T y``: ``y [rows, d]`` -> ``[cols, d]``, differentiable in ``y``."""
        return _Product.apply(y, self._csr("t"), self._csr("m"), resolve_kernel(self.kernel, y))
