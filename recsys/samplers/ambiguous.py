"""Ambiguous negatives (SimANS): candidates scored close to the positive are the likeliest picks."""

from __future__ import annotations

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
    ``topk``, uniform windows of a per-batch pool with each user's training positives masked)."""

    name: Literal["ambiguous"] = "ambiguous"
    n_negatives: int = Field(1, ge=1)
    candidates: int | None = Field(64, ge=1)
    a: float = Field(0.5, gt=0)
    b: float = 0.0
    base: NestedSampler = UniformConfig(exclude_positives=True, pool=256)

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
        # A floor keeps every candidate drawable: distinct picks need N non-zero weights even when the
        # kernel underflows for candidates scored far from the positive.
        probabilities = torch.softmax(logits, dim=1).clamp_min(1e-12)  # [B, M]
        picks = min(self.n_negatives, width)
        if not candidates.unit_weights:
            # A weight-0 candidate (a masked positive) keeps a vanishing weight: it is picked only once a
            # row has no unmasked candidate left (and then adds nothing to the loss).
            probabilities = torch.where(candidates.weight > 0, probabilities, torch.full_like(probabilities, 1e-30))
        picked = torch.multinomial(
            probabilities, picks, replacement=False, generator=self.generator(queries.device)
        )  # [B, N]
        negatives = select(candidates, picked)
        log_pick = torch.log(probabilities.gather(1, picked) / probabilities.sum(1, keepdim=True) * width)
        return Negatives(
            items=negatives.items,
            log_q=negatives.log_q + log_pick,
            weight=negatives.weight,
            pos_weight=negatives.pos_weight,
            extras=negatives.extras,
            unit_weights=negatives.unit_weights,
            positives=negatives.positives,
        )
