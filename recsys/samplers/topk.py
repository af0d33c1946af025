"""Hard negatives: the k highest-scored of a base sampler's candidates (DNS, TRON)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.interfaces import Negatives, ScoreFn, Section
from recsys.samplers.base import Sampler
from recsys.samplers.nested import NestedSampler
from recsys.samplers.pool import blocks, pooled
from recsys.samplers.uniform import UniformConfig

__all__ = ["TopKConfig", "TopKSampler", "candidate_scores", "check_candidates", "select", "with_candidates"]


class TopKConfig(Section):
    """``sampler.name: topk``: keep the ``k`` best of ``candidates`` drawn by ``base``.

    ``candidates`` sets the base's ``n_negatives`` (``candidates: null`` uses the base's own count, e.g.
    for a mixed base). The default base draws a pool of 256 uniform items per batch in blocks of
    ``candidates`` (``windows: blocks``): each contiguous run of queries takes one block as its
    candidates, each user's training positives masked, so scoring them is one batched GEMM of a
    quarter of the pool's at M = 64. ``base: {name: uniform, exclude_positives: true, pool: 256}``
    gives each query a random window of the pool instead (one GEMM over the whole pool), and
    ``base: {name: uniform, exclude_positives: true}`` every query its own candidates (DNS as
    published), at several times the cost per step. The three train MF to the same accuracy within a
    seed's spread on ml-100k (docs/results.md).
    """

    name: Literal["topk"] = "topk"
    k: int = Field(1, ge=1)
    candidates: int | None = Field(64, ge=1)
    base: NestedSampler = UniformConfig(exclude_positives=True, pool=256, windows="blocks")

    @model_validator(mode="after")
    def _enough_candidates(self) -> TopKConfig:
        if self.candidates is not None and self.k > self.candidates:
            raise ValueError(f"k ({self.k}) must not exceed candidates ({self.candidates})")
        check_candidates(self.base, self.candidates)
        return self


def check_candidates(base: Section, candidates: int | None) -> None:
    """``candidates`` can only be set on a base that draws ``n_negatives`` (within its pool, if any)."""
    if candidates is None:
        return
    if "n_negatives" not in type(base).model_fields:
        raise ValueError(
            f"candidates: base sampler {base.name!r} has no n_negatives to set; "  # type: ignore[attr-defined]
            "set candidates: null to use the base's own count"
        )
    pool = getattr(base, "pool", None)
    if pool is not None and candidates > pool:
        raise ValueError(f"candidates ({candidates}) exceed the base's pool ({pool}); raise base.pool")


def with_candidates(base: Section, candidates: int | None) -> Section:
    """``base`` with its ``n_negatives`` set to ``candidates`` (unchanged when that is None)."""
    if candidates is None:
        return base
    check_candidates(base, candidates)
    return type(base).model_validate({**base.model_dump(), "n_negatives": candidates})


class TopKSampler(Sampler):
    """Draws ``M`` candidates from a base sampler, scores them with the current model (no gradient) and
    keeps the ``k`` highest per query.

    ``k = 1`` over uniform candidates with BPR is Dynamic Negative Sampling (Zhang et al., SIGIR 2013,
    "DNS"; RecBole's ``dynamic`` sampling keeps the best of ``candidate_num`` draws; M = 64 is common); ``k = 100`` over 16384 shared uniform + 127 in-batch
    candidates with a sampled softmax is TRON (Wilm et al., RecSys 2023). Each kept negative carries its
    base ``log_q`` and weight (the probability it was proposed, not that it was kept: the selection
    depends on the model and has no closed form).

    Args:
        base: the candidate sampler.
        k: negatives kept per query.
        seed: generator seed (the base has its own).
    """

    def __init__(self, base: Sampler, k: int, seed: int) -> None:
        super().__init__(base.n_items, seed)
        self.base = base
        self.k = k

    @classmethod
    def from_config(cls, config: TopKConfig, train: Interactions, seed: int) -> TopKSampler:
        from recsys.samplers import SAMPLERS

        base = with_candidates(config.base, config.candidates)
        return cls(SAMPLERS.build(base, train, seed + 1), config.k, seed)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        candidates = self.base(queries, positives, scorer)  # [B, M]
        if self.k >= candidates.items.shape[1]:
            return candidates
        scores = candidate_scores(candidates, scorer)  # [B, M], no grad
        if not candidates.unit_weights:  # a weight-0 candidate (a masked positive) is never kept
            scores = scores.masked_fill(candidates.weight == 0, float("-inf"))
        # DNS keeps one: a max's indices cost 0.055 ms at 2048 x 64, an argmax 0.08, a top-1 0.08.
        kept = scores.max(dim=1, keepdim=True).indices if self.k == 1 else torch.topk(scores, self.k, dim=1).indices
        return select(candidates, kept)


def candidate_scores(candidates: Negatives, scorer: ScoreFn) -> Tensor:
    """``[B, M]`` scores of the candidates: a blocked pool's blocks by one batched GEMM (when the scorer
    offers ``blocks``), any other pool's whole pool by one GEMM, else the candidates themselves."""
    grid = blocks(candidates)
    if grid is not None and hasattr(scorer, "blocks"):
        return scorer.blocks(grid)  # [B, M]
    if pooled(candidates):
        pool = candidates.extras["pool"]  # [P]
        pool_scores = scorer(pool.unsqueeze(0).expand(candidates.items.shape[0], -1))  # [B, P]
        return pool_scores.gather(1, candidates.extras["pool_index"])
    return scorer(candidates.items)


def select(negatives: Negatives, columns: Tensor) -> Negatives:
    """The negatives at ``columns [B, k]`` of each row (extras of shape ``[B, M]`` follow; a selection
    is no longer laid out in blocks, so ``pool_blocks`` is dropped)."""
    batch, width = negatives.items.shape

    def pick(values: Tensor) -> Tensor:
        return values.expand(batch, width).gather(1, columns)

    extras = {
        key: pick(value) if value.dim() == 2 and value.shape == (batch, width) else value
        for key, value in negatives.extras.items()
        if key != "pool_blocks"
    }
    return Negatives(
        items=pick(negatives.items),
        log_q=pick(negatives.log_q),
        weight=pick(negatives.weight),
        pos_weight=negatives.pos_weight,
        extras=extras,
        unit_weights=negatives.unit_weights,
        positives=negatives.positives,
    )
