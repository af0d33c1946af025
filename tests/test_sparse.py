"""SparseMatrix's two kernels against scipy's product and the transpose rule of its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.models.sparse import SparseMatrix, resolve_kernel


def _matrix() -> sp.csr_array:
    """A ``[7, 5]`` matrix with an empty row (3) and an empty column (4), and a duplicate entry."""
    rows = np.array([0, 0, 1, 2, 2, 4, 5, 6, 6, 0])
    cols = np.array([0, 2, 1, 0, 3, 2, 1, 0, 3, 2])
    values = np.array([0.5, -1.0, 2.0, 0.25, 1.5, -0.75, 3.0, 1.0, -2.0, 0.5], dtype=np.float32)
    return sp.csr_array(sp.coo_array((values, (rows, cols)), shape=(7, 5)))


@pytest.mark.parametrize("kernel", ["embedding_bag", "csr"])
def test_products_and_gradients_equal_scipy(kernel: str) -> None:
    matrix = _matrix()
    module = SparseMatrix(matrix, kernel=kernel)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=generator, requires_grad=True)
    y = torch.randn(7, 3, generator=generator, requires_grad=True)
    product, transposed = module.matmul(x), module.transpose_matmul(y)
    torch.testing.assert_close(product, torch.from_numpy(matrix @ x.detach().numpy()))
    torch.testing.assert_close(transposed, torch.from_numpy(matrix.T @ y.detach().numpy()))
    assert torch.equal(product[3], torch.zeros(3)) and torch.equal(transposed[4], torch.zeros(3))
    upstream_x, upstream_y = torch.randn(7, 3, generator=generator), torch.randn(5, 3, generator=generator)
    (product * upstream_x).sum().add((transposed * upstream_y).sum()).backward()
    # d/dx sum(G * M x) = M^T G; d/dy sum(H * M^T y) = M H.
    torch.testing.assert_close(x.grad, torch.from_numpy(matrix.T @ upstream_x.numpy()))
    torch.testing.assert_close(y.grad, torch.from_numpy(matrix @ upstream_y.numpy()))


@pytest.mark.parametrize("kernel", ["embedding_bag", "csr"])
def test_kernels_pass_gradcheck_in_float64(kernel: str) -> None:
    module = SparseMatrix(_matrix(), kernel=kernel)
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: (module.matmul(a), module.transpose_matmul(b)), (x, y))


def test_auto_picks_embedding_bag_on_the_cpu_and_csr_on_cuda() -> None:
    assert resolve_kernel("auto", torch.zeros(1)) == "embedding_bag"
    assert resolve_kernel("auto", torch.zeros(1, device="meta")) == "embedding_bag"
    assert resolve_kernel("csr", torch.zeros(1)) == "csr"
    if torch.cuda.is_available():
        assert resolve_kernel("auto", torch.zeros(1, device="cuda")) == "csr"


def test_an_unknown_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel 'dense': choose one of auto, embedding_bag, csr"):
        SparseMatrix(_matrix(), kernel="dense")  # type: ignore[arg-type]
