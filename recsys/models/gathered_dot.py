"""Each query's dot product with its own candidates, read from the item table by index:
``s[b, c] = q[b] . table[items[b, c]]``, without ever holding the ``[B, C, d]`` candidate rows.

Gathering the rows (``table[items]``, then ``batched_dot``) builds a ``[B, C, d]`` tensor in the
forward pass and two more in the backward (its gradient, then the ``index_add`` of it into the
table), 131 MB each for SimpleX's 512 x 1000 negatives: the step is memory-bound. Here

- the forward gathers and reduces the rows in chunks small enough to stay in cache;
- the query gradient ``dq[b] = sum_c g[b, c] table[items[b, c]]`` is one ``embedding_bag`` (a
  weighted sum of rows, fused);
- the table gradient ``dT[i] = sum_{(b, c): items[b, c] = i} g[b, c] q[b]`` is one ``embedding_bag``
  over the query rows after sorting the pairs by item;
- pairs whose gradient is exactly 0 are left out of both when they are most of them: under a hinge
  loss (SimpleX's CCL counts only negatives above its margin of 0.4-0.9) nearly all are.

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
# The backward keeps only the pairs with a nonzero gradient when they are fewer than this share of all
# pairs (finding them costs one pass over the gradient). For SimpleX on Gowalla (256 x 2001 of 40,981)
# the table's sort and embedding_bag over all 512,256 pairs took 48 ms of a 140 ms step (one thread).
_SPARSE_GRADIENT_SHARE = 0.5


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
        batch, candidates = items.shape
        grad = grad.contiguous().to(table.dtype).reshape(-1)  # [B * C]
        flat = items.reshape(-1)  # [B * C]
        pairs = None  # every pair; else the (ascending) indices of the pairs with a nonzero gradient
        nonzero = torch.count_nonzero(grad)
        if int(nonzero) < _SPARSE_GRADIENT_SHARE * grad.numel():
            pairs = grad.nonzero().squeeze(1)  # [P]
            grad, flat = grad[pairs], flat[pairs]
        grad_query = grad_table = None
        if ctx.needs_input_grad[0]:
            # Query b's bag: sum_c grad[b, c] * table[items[b, c]].
            if pairs is None:
                grad_query = F.embedding_bag(items, table, per_sample_weights=grad.view(batch, candidates), mode="sum")
            else:
                grad_query = F.embedding_bag(flat, table, _bag_offsets(pairs // candidates, batch),
                                             per_sample_weights=grad, mode="sum")
            grad_query = grad_query.to(query.dtype)
        if ctx.needs_input_grad[1]:
            # Stable, so that each item's terms are always summed in the same order (reproducible).
            order = torch.argsort(flat, stable=True)
            pair = order if pairs is None else pairs[order]
            owners = torch.div(pair, candidates, rounding_mode="floor")  # the query of each pair
            grad_table = F.embedding_bag(owners, query.to(table.dtype), _bag_offsets(flat, table.shape[0]),
                                         per_sample_weights=grad[order], mode="sum")
        return grad_query, grad_table, None


def _bag_offsets(bags: Tensor, n_bags: int) -> Tensor:
    """Where each of ``n_bags`` bags starts when ``bags [P]`` (each element's bag) is sorted -> ``[n_bags]``."""
    counts = torch.bincount(bags, minlength=n_bags)
    return counts.cumsum(0) - counts
