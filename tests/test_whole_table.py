"""normalize_rows and squared_norm: the values and gradients of F.normalize and x.pow(2).sum()."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.models.whole_table import normalize_rows, squared_norm


def _table(rows: int = 7, dim: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, dtype=torch.float64, generator=generator, requires_grad=True)


def test_normalize_rows_is_f_normalize_with_its_gradient() -> None:
    x = _table()
    torch.testing.assert_close(normalize_rows(x), F.normalize(x, dim=1))
    assert torch.allclose(normalize_rows(x).norm(dim=1), torch.ones(7, dtype=torch.float64))
    assert torch.autograd.gradcheck(normalize_rows, (x,))
    weights = torch.randn(7, 5, dtype=torch.float64)
    ours = torch.autograd.grad((normalize_rows(x) * weights).sum(), x)[0]
    theirs = torch.autograd.grad((F.normalize(x, dim=1) * weights).sum(), x)[0]
    torch.testing.assert_close(ours, theirs)


def test_a_gradient_along_a_row_is_removed_and_rows_below_eps_are_scaled_by_it() -> None:
    x = _table(rows=3)
    # Stretching a row does not change its direction, so a gradient along y has no effect on x.
    y = normalize_rows(x)
    assert torch.autograd.grad(y, x, grad_outputs=y.detach())[0].abs().max() < 1e-12
    tiny = torch.tensor([[1e-14, 0.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    grad = torch.tensor([[1.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    ours = torch.autograd.grad(normalize_rows(tiny, eps=1e-12), tiny, grad_outputs=grad)[0]
    theirs = torch.autograd.grad(F.normalize(tiny, dim=1, eps=1e-12), tiny, grad_outputs=grad)[0]
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours[0], grad[0] / 1e-12)  # x / eps: a constant scale
    torch.testing.assert_close(ours[1], torch.tensor([16.0, -12.0], dtype=torch.float64) / 125)


def test_squared_norm_is_the_sum_of_squares_with_gradient_two_x() -> None:
    x = _table()
    torch.testing.assert_close(squared_norm(x), x.pow(2).sum())
    (grad,) = torch.autograd.grad(3 * squared_norm(x), x)
    torch.testing.assert_close(grad, 6 * x.detach())
    assert torch.autograd.gradcheck(squared_norm, (x,))
