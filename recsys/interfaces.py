"""The small contracts every part of recsys shares.

Samplers, models, losses and the evaluator meet only through the types in this file (DESIGN.md,
"Contracts"). Shapes: ``B`` queries in a batch, ``N`` negatives per query, ``C`` candidate items per
query, ``n_items`` items in the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

__all__ = [
    "DotProductScorer",
    "Loss",
    "Negatives",
    "NegativeSampler",
    "RankingBatch",
    "RankingEvaluator",
    "Scorer",
    "ScoreFn",
    "Section",
]


@dataclass(frozen=True)
class Negatives:
    """What a negative sampler returns for one batch of ``B`` queries.

    Attributes:
        items: ``[B, N]`` long, the sampled negative item ids.
        log_q: ``[B, N]`` float, log of each negative's proposal probability (for log-Q correction of a
            sampled softmax; Yi et al., RecSys 2019).
        weight: ``[B, N]`` float, per-negative loss weight (1 unless the sampler corrects noise or bias).
        pos_weight: ``[B]`` float, per-positive loss weight (IPS-style samplers).
        extras: per-pair tensors that a sampler's matching loss reads (e.g. NBPO's flip logits).
        unit_weights: True when every weight is 1, so a loss may skip multiplying by them.
        positives: ``[B]`` long, the positives these negatives were drawn for (set by the training
            step when a sampler leaves it out), so a loss can mask accidental hits.

    A ``[B, N]`` field may be a broadcast view (stride 0 over the batch) when all queries share the
    same negatives; treat every field as read-only.
    """

    items: Tensor
    log_q: Tensor
    weight: Tensor
    pos_weight: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    unit_weights: bool = False
    positives: Tensor | None = None

    @property
    def shared(self) -> bool:
        """True when every query has the same negatives (``items`` is a stride-0 view over the batch)."""
        return self.items.shape[0] > 1 and self.items.stride(0) == 0

    def accidental_hits(self) -> Tensor:
        """``[B, N]`` bool: the negative is the query's own positive."""
        if self.positives is None:
            raise ValueError("these negatives do not know their positives")
        return self.items == self.positives.unsqueeze(1)

    @classmethod
    def unweighted(cls, items: Tensor, log_q: Tensor) -> Negatives:
        """Negatives with unit weights: ``items`` and ``log_q`` are ``[B, N]``."""
        return cls(
            items=items,
            log_q=log_q,
            weight=torch.ones((1, 1), dtype=log_q.dtype, device=log_q.device).expand(log_q.shape),
            pos_weight=torch.ones((1,), dtype=log_q.dtype, device=log_q.device).expand(items.shape[0]),
            unit_weights=True,
        )


class ScoreFn(Protocol):
    """A no-grad view of the current model for one batch: ``items [B, C] -> scores [B, C]``.

    The scorer a model hands its sampler (``recsys.samplers.base.BoundScorer``) also has
    ``blocks(pool [G, N]) -> [B, N]`` for candidates laid out in blocks (``recsys.samplers.pool``);
    samplers fall back to ``__call__`` for a scorer without it.
    """

    def __call__(self, items: Tensor) -> Tensor: ...


class NegativeSampler(Protocol):
    """Draws negatives for a batch of queries (an ``nn.Module``: its tables are buffers)."""

    def __call__(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        """Args: queries ``[B]`` long, positives ``[B]`` long, scorer for these queries."""
        ...


class Loss(Protocol):
    """A pure function of scores and negatives: ``pos_scores [B]``, ``neg_scores [B, N]`` -> scalar."""

    def __call__(self, pos_scores: Tensor, neg_scores: Tensor, negatives: Negatives) -> Tensor: ...


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores every item for a batch of queries."""

    n_items: int

    def score_all(self, queries: Tensor) -> Tensor:
        """``queries [B]`` -> ``scores [B, n_items]``."""
        ...


@runtime_checkable
class DotProductScorer(Scorer, Protocol):
    """A scorer whose scores are ``query_embeddings(q) @ item_embeddings().T``.

    The evaluator uses this to compute scores as one GEMM into a reused buffer.
    """

    def query_embeddings(self, queries: Tensor) -> Tensor:
        """``queries [B]`` -> ``[B, d]``."""
        ...

    def item_embeddings(self) -> Tensor:
        """``[n_items, d]``."""
        ...


class RankingBatch(NamedTuple):
    """One batch of evaluation queries with the items to mask and the items to find.

    ``*_rows`` index into the batch (0..B-1), ``*_cols`` are item ids; both long.

    Attributes:
        queries: ``[B]`` long, the evaluated users (or sequence positions).
        exclude_rows, exclude_cols: ``[E]``, known items removed from the ranking (train; train and
            validation at test time).
        relevant_rows, relevant_cols: ``[R]``, the held-out items to be found.
    """

    queries: Tensor
    exclude_rows: Tensor
    exclude_cols: Tensor
    relevant_rows: Tensor
    relevant_cols: Tensor


class RankingEvaluator(Protocol):
    """Per-epoch evaluation state: ``begin``, one ``step`` per batch, ``end`` returns per-query vectors."""

    def begin(self, model: Scorer) -> None: ...

    def step(self, model: Scorer, batch: RankingBatch) -> None: ...

    def end(self) -> dict[str, Tensor]:
        """Metric name (``ndcg@20``) -> ``[Q]`` per-query values, plus ``"queries"`` -> ``[Q]`` ids."""
        ...


class Section(BaseModel):
    """Base of every typed config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
