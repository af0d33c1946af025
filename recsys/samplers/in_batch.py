"""In-batch negatives: the other queries' positives."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.interfaces import Negatives, ScoreFn, Section
from recsys.samplers.base import Sampler

__all__ = ["InBatchConfig", "InBatchSampler"]


class InBatchConfig(Section):
    """``sampler.name: in_batch``. ``n_negatives``: how many of the other B - 1 positives each query
    gets (None: all of them)."""

    name: Literal["in_batch"] = "in_batch"
    n_negatives: int | None = Field(None, ge=1)


class InBatchSampler(Sampler):
    """Each query's negatives are the positives of other queries in its batch.

    Since batches are drawn from the training interactions, an item appears as an in-batch negative in
    proportion to its training frequency: ``log_q = log(count(j) / sum count)`` is the log-probability of
    that proposal, for the log-Q correction of a sampled softmax (Yi et al., RecSys 2019, Sec. 4:
    ``s_c(x, j) = s(x, j) - log p_j``). An other query's positive may equal this query's own (an
    accidental hit); losses that care mask it with ``Negatives.accidental_hits()``.

    With ``n_negatives = N < B - 1``, query ``b`` takes the positives at positions ``(b + o) mod B`` for
    ``N`` distinct random offsets ``o`` in ``[1, B)``, drawn once per batch: a uniform ``N``-subset of
    the others for every query, from one ``randperm``.

    Args:
        counts: ``[n_items]`` training interactions per item.
        n_negatives: negatives per query (None: all B - 1 others).
        seed: generator seed.
    """

    def __init__(self, counts: np.ndarray, n_negatives: int | None, seed: int) -> None:
        super().__init__(len(counts), seed)
        self.n_negatives = n_negatives
        with np.errstate(divide="ignore"):
            log_frequency = np.log(counts / max(1, counts.sum()))
        self.register_buffer("_log_frequency", torch.from_numpy(log_frequency.astype(np.float32)), persistent=False)

    @classmethod
    def from_config(cls, config: InBatchConfig, train: Interactions, seed: int) -> InBatchSampler:
        return cls(train.item_counts(), config.n_negatives, seed)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        batch = positives.shape[0]
        if batch < 2:
            raise ValueError("in-batch negatives need a batch of at least 2")
        rows = torch.arange(batch, device=positives.device).unsqueeze(1)  # [B, 1]
        if self.n_negatives is None or self.n_negatives >= batch - 1:
            # Positions 0..B-2 of the others: skip the query's own position.
            others = torch.arange(batch - 1, device=positives.device).unsqueeze(0)  # [1, B-1]
            positions = others + (others >= rows).long()  # [B, B-1]
        else:
            generator = self.generator(positives.device)
            offsets = torch.randperm(batch - 1, generator=generator, device=positives.device)[: self.n_negatives]
            positions = (rows + offsets.unsqueeze(0) + 1) % batch  # [B, N]
        items = positives[positions]
        return Negatives.unweighted(items, self._log_frequency[items])
