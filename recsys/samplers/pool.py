"""Negatives drawn as windows of one per-batch pool, and how to score them with one GEMM."""

from __future__ import annotations

from recsys.interfaces import Negatives

__all__ = ["pooled"]


def pooled(negatives: Negatives) -> bool:
    """Whether ``negatives.items [B, N]`` are windows of a pool: ``extras["pool"] [P]`` and
    ``extras["pool_index"] [B, N]`` with ``items == pool[pool_index]`` (a pooled uniform sampler,
    and any ``topk``/``ambiguous`` selection of its candidates, which selects the index along).
    Then ``B x P`` scores from one GEMM replace ``B x N`` gathered rows."""
    index = negatives.extras.get("pool_index")
    return "pool" in negatives.extras and index is not None and index.shape == negatives.items.shape
