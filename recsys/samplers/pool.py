"""Negatives drawn as windows of one per-batch pool, and how to score them with one GEMM."""

from __future__ import annotations

import torch
from torch import Tensor

from recsys.interfaces import Negatives

__all__ = ["block_rows", "blocks", "pooled"]


def pooled(negatives: Negatives) -> bool:
    """Whether ``negatives.items [B, N]`` are windows of a pool: ``extras["pool"] [P]`` and
    ``extras["pool_index"] [B, N]`` with ``items == pool[pool_index]`` (a pooled uniform sampler,
    and any ``topk``/``ambiguous`` selection of its candidates, which selects the index along).
    Then ``B x P`` scores from one GEMM replace ``B x N`` gathered rows."""
    index = negatives.extras.get("pool_index")
    return "pool" in negatives.extras and index is not None and index.shape == negatives.items.shape


def blocks(negatives: Negatives) -> Tensor | None:
    """The ``[G, N]`` blocks of a blocked pool, or None: with ``extras["pool_blocks"] [G, N]``, row ``b``
    of ``negatives.items [B, N]`` is block ``block_rows(B, G)[b]`` whole, so a scorer needs only the
    ``G`` products of a block's rows with its ``N`` items (one batched GEMM, ``G`` times less work than
    scoring the whole pool for every row)."""
    return negatives.extras.get("pool_blocks")


def block_rows(batch: int, n_blocks: int, device: torch.device | None = None) -> Tensor:
    """``[batch]`` long: the block of each row when ``batch`` rows are cut into ``n_blocks`` contiguous
    runs of ``ceil(batch / n_blocks)`` rows (the last ones shorter or empty)."""
    per_block = -(-batch // n_blocks)
    return torch.arange(batch, device=device) // per_block
