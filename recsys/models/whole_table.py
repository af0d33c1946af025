"""Operations a training step applies to a whole embedding table, with hand-written backwards.

SimpleX normalises its item table and penalises the squared norm of both tables at every step. With
autograd's generic backwards these were the largest part of its step after the candidates' scores:
``F.normalize`` forward + backward of Gowalla's ``[40,981, 64]`` item table took 17.4 ms on one thread
(its backward builds five full-size temporaries), ``x.pow(2).sum()`` 4.7 ms. Here they take 4.6 and
1.4 ms (``docs/benchmarks.md``), with the same values and gradients to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["normalize_rows", "squared_norm"]


def normalize_rows(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``x [N, d]`` -> ``x / max(|x_n|, eps)`` row by row, as ``F.normalize(x, dim=1, eps=eps)``."""
    return _NormalizeRows.apply(x, eps)


def squared_norm(x: Tensor) -> Tensor:
    """``sum(x ** 2)`` over every element of ``x`` -> a scalar, without a temporary the size of ``x``."""
    return _SquaredNorm.apply(x)


class _NormalizeRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        lengths = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # [N, 1]
        clamped = lengths < eps  # [N, 1]: these rows are divided by eps, a constant
        lengths.clamp_min_(eps)
        y = x / lengths  # [N, d]
        ctx.save_for_backward(y, lengths, clamped)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        # d(x / |x|) = (g - y (g . y)) / |x|: the part of g orthogonal to y, scaled by 1 / |x|.
        y, lengths, clamped = ctx.saved_tensors
        grad = grad.contiguous()
        along = torch.bmm(grad.unsqueeze(1), y.unsqueeze(2)).squeeze(2)  # [N, 1] = g . y, no [N, d] temporary
        along.masked_fill_(clamped, 0)
        return torch.addcmul(grad, y, along, value=-1).div_(lengths), None


class _SquaredNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        flat = x.reshape(-1)
        return torch.dot(flat, flat)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return x * (2 * grad)
