"""Each query's dot product with its own candidates: ``s[b, c] = q[b] . v[b, c]``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batched_dot"]

# Measured on CPU: a broadcast product beats bmm's many tiny GEMMs up to a few hundred candidates
# (0.57 vs 1.65 ms for B=2048, C=2); bmm wins from about a thousand.
_BROADCAST_MAX_CANDIDATES = 256


def batched_dot(query: Tensor, items: Tensor) -> Tensor:
    """``query [B, d]``, ``items [B, C, d]`` -> ``[B, C]``, with a hand-written backward.

    Autograd's backward of ``(items * query[:, None]).sum(2)`` materialises the broadcast gradient
    twice; the explicit one, ``dq = sum_c g[:, c] v[:, c]`` and ``dv = g[:, :, None] q[:, None]``,
    measured 169 vs 210 us (forward + backward, B 2048, C 2, d 64: an MF-BPR step on ml-100k).
    """
    if items.shape[1] > _BROADCAST_MAX_CANDIDATES:
        return torch.bmm(items, query.unsqueeze(2)).squeeze(2)
    return _BroadcastDot.apply(query, items)


class _BroadcastDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, items: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(query, items)
        return (items * query.unsqueeze(1)).sum(2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        query, items = ctx.saved_tensors
        grad = grad.unsqueeze(2)  # [B, C, 1]
        grad_query = (items * grad).sum(1) if ctx.needs_input_grad[0] else None
        grad_items = grad * query.unsqueeze(1) if ctx.needs_input_grad[1] else None
        return grad_query, grad_items
