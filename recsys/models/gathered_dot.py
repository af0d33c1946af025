"""Each query's dot product with its own candidates, read from the item table by index:
``s[b, c] = q[b] . table[items[b, c]]``, without ever holding the ``[B, C, d]`` candidate rows.

Gathering the rows (``table[items]``, then ``batched_dot``) builds a ``[B, C, d]`` tensor in the
forward pass and two more in the backward (its gradient, then the ``index_add`` of it into the
table), 131 MB each for SimpleX's 512 x 1000 negatives: the step is memory-bound. Here

- the forward gathers and reduces the rows in chunks small enough to stay in cache;
- the query gradient ``dq[b] = sum_c g[b, c] table[items[b, c]]`` is one ``embedding_bag`` (a
  weighted sum of rows, fused);
- the table gradient ``dT[i] = sum_{(b, c): items[b, c] = i} g[b, c] q[b]`` is one ``embedding_bag``
  over the query rows after sorting the pairs by item.

Measured on this 2-core CPU, one thread, forward + backward (d 64): see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["gathered_dot"]

# Values (floats) of the largest [b, C, d] block of candidate rows gathered at once: 1 MiB, which
# stays in cache. The forward of 512 x 1001 of 38,048 took 11.1 ms; the old path (16 MiB blocks, then batched_dot) took 27.6
# (scripts/candidate_scores.py). A loop over chunks of rows, not users: 128 iterations at 512 x 1001.
_CHUNK_VALUES = 2**18


def gathered_dot(query: Tensor, table: Tensor, items: Tensor) -> Tensor:
    """``query [B, d]``, ``table [I, d]``, ``items [B, C]`` (int64) -> ``[B, C]`` with
    ``s[b, c] = query[b] . table[items[b, c]]``; differentiable in ``query`` and ``table``.

    The table's gradient is dense ``[I, d]`` (as ``index_select``'s is); models whose embeddings take
    sparse gradients gather their rows instead.
    """
    if torch.is_grad_enabled() and (query.requires_grad or table.requires_grad):
        return _GatheredDot.apply(query, table, items)
    return _scores(query, table, items)


def _scores(query: Tensor, table: Tensor, items: Tensor) -> Tensor:
    batch, candidates = items.shape
    dim = query.shape[1]
    scores = query.new_empty(batch, candidates)
    rows = max(1, _CHUNK_VALUES // max(1, candidates * dim))
    for start in range(0, batch, rows):
        stop = start + rows
        block = table.index_select(0, items[start:stop].reshape(-1)).view(-1, candidates, dim)
        torch.sum(block * query[start:stop].unsqueeze(1), dim=2, out=scores[start:stop])
    return scores


class _GatheredDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, table: Tensor, items: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(query, table, items)
        return _scores(query, table, items)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        query, table, items = ctx.saved_tensors
        grad = grad.contiguous().to(table.dtype)  # [B, C]
        grad_query = grad_table = None
        if ctx.needs_input_grad[0]:
            # Row b is bag b: sum_c grad[b, c] * table[items[b, c]].
            grad_query = F.embedding_bag(items, table, per_sample_weights=grad, mode="sum").to(query.dtype)
        if ctx.needs_input_grad[1]:
            flat = items.reshape(-1)
            # Stable, so that each item's terms are always summed in the same order (reproducible).
            order = torch.argsort(flat, stable=True)
            counts = torch.bincount(flat, minlength=table.shape[0])
            offsets = counts.cumsum(0) - counts  # [I]: where each item's bag starts in `order`
            owners = torch.div(order, items.shape[1], rounding_mode="floor")  # the query of each pair
            grad_table = F.embedding_bag(
                owners, query.to(table.dtype), offsets, per_sample_weights=grad.reshape(-1)[order], mode="sum"
            )
        return grad_query, grad_table, None
