"""Ambiguous negatives (SimANS): candidates scored close to the positive are the likeliest picks."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.interfaces import Negatives, ScoreFn, Section
from recsys.samplers.base import Sampler
from recsys.samplers.nested import NestedSampler
from recsys.samplers.topk import candidate_scores, check_candidates, select, with_candidates
from recsys.samplers.uniform import UniformConfig

__all__ = ["AmbiguousConfig", "AmbiguousSampler"]


class AmbiguousConfig(Section):
    """``sampler.name: ambiguous``: ``n_negatives`` of ``candidates`` drawn by ``base`` (by default, as for
    ``topk``, a per-batch pool of 256 uniform items in blocks of ``candidates``, one block per run of
    queries, each user's training positives masked; as accurate as random windows of the pool at 1 of 64
    on ml-100k and ml-1m, docs/results.md)."""

    name: Literal["ambiguous"] = "ambiguous"
    n_negatives: int = Field(1, ge=1)
    candidates: int | None = Field(64, ge=1)
    a: float = Field(0.5, gt=0)
    b: float = 0.0
    base: NestedSampler = UniformConfig(exclude_positives=True, pool=256, windows="blocks")

    @model_validator(mode="after")
    def _enough_candidates(self) -> AmbiguousConfig:
        if self.candidates is not None and self.n_negatives > self.candidates:
            raise ValueError(f"n_negatives ({self.n_negatives}) must not exceed candidates ({self.candidates})")
        check_candidates(self.base, self.candidates)
        return self


class AmbiguousSampler(Sampler):
    """SimANS (Zhou et al., EMNLP 2022, Eq. 3): from ``M`` base candidates, draw ``N`` distinct ones
    with probability ``p_j ∝ exp(-a (s_j - s_pos - b)^2)``, ``s`` the current model's scores.

    Candidates scored far below the positive (easy) and far above it (likely false negatives) are
    both rarely picked; those near ``s_pos + b`` are the "ambiguous" ones. We implement the README's
    formula; the official training code (microsoft/SimXNS, ``SimANS/utils/util_wiki.py``) computes
    ``exp(-a (s_j - s_pos + b)^2)``, so its ``b`` is our ``-b``. Both default to ``a = 0.5, b = 0``.

    ``log_q`` of a pick is ``log q_base(j) + log(M p_j)``: the base proposal times the expected number
    of times ``j`` is picked per candidate draw (exact for one pick; an approximation for several
    distinct picks).

    Args:
        base: the candidate sampler.
        n_negatives: ``N`` picks per query.
        a, b: width and offset of the kernel.
        seed: generator seed (the base has its own).
    """

    def __init__(self, base: Sampler, n_negatives: int, a: float, b: float, seed: int) -> None:
        super().__init__(base.n_items, seed)
        self.base = base
        self.n_negatives = n_negatives
        self.a = a
        self.b = b

    @classmethod
    def from_config(cls, config: AmbiguousConfig, train: Interactions, seed: int) -> AmbiguousSampler:
        from recsys.samplers import SAMPLERS

        base = with_candidates(config.base, config.candidates)
        return cls(SAMPLERS.build(base, train, seed + 1), config.n_negatives, config.a, config.b, seed)

    def selection_logits(self, candidate_scores: Tensor, positive_scores: Tensor) -> Tensor:
        """``[B, M]`` candidate scores and ``[B]`` positive scores -> ``[B, M]`` log-weights."""
        return -self.a * (candidate_scores - positive_scores.unsqueeze(1) - self.b) ** 2

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        candidates = self.base(queries, positives, scorer)  # [B, M]
        width = candidates.items.shape[1]
        logits = self.selection_logits(candidate_scores(candidates, scorer), scorer(positives.unsqueeze(1))[:, 0])
        picks = min(self.n_negatives, width)
        if not candidates.unit_weights:
            # A weight-0 candidate (a masked positive) ranks below every other: picked only once a row
            # has no unmasked candidate left (and then it adds nothing to the loss).
            logits = logits.masked_fill(candidates.weight == 0, -1e30)
        # Gumbel-top-k (Kool et al., ICML 2019): the top N of logits + Gumbel noise are N draws without
        # replacement in proportion to exp(logits), in one vectorised pass (torch.multinomial without
        # replacement measured several times slower here).
        uniform = torch.rand(logits.shape, generator=self.generator(queries.device), device=logits.device)
        gumbel = -torch.log(-torch.log(uniform.clamp_(1e-20, 1.0 - 1e-7)))
        picked = torch.topk(logits + gumbel, picks, dim=1).indices  # [B, N]
        negatives = select(candidates, picked)
        log_pick = torch.log_softmax(logits, dim=1).gather(1, picked) + math.log(width)
        return Negatives(
            items=negatives.items,
            log_q=negatives.log_q + log_pick.clamp_min(-1e4),
            weight=negatives.weight,
            pos_weight=negatives.pos_weight,
            extras=negatives.extras,
            unit_weights=negatives.unit_weights,
            positives=negatives.positives,
        )
