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
from recsys.samplers.positives import PositiveSet

__all__ = ["InBatchConfig", "InBatchSampler"]


class InBatchConfig(Section):
    """``sampler.name: in_batch``. ``n_negatives``: how many of the batch's positives every query is
    given (None: all of them; its own is always left out)."""

    name: Literal["in_batch"] = "in_batch"
    n_negatives: int | None = Field(None, ge=1)
    # Give weight 0 to another query's positive that is also a training positive of this query's user
    # (a session's own items, for session models: TRON rejects them).
    exclude_positives: bool = False


class InBatchSampler(Sampler):
    """Each query's negatives are the other positives of its batch (under DDP, of the global batch:
    every process's positives are gathered).

    Every query gets the same set: all ``B`` positives of the batch (or ``N`` of them at random
    positions, drawn once per batch), as one shared ``[B, N]`` view that the model scores with one GEMM;
    a query's own position in the set gets weight 0, so it has ``B - 1`` (or ``N`` or ``N - 1``)
    negatives. Since batches are drawn from the training interactions, an item appears as an in-batch
    negative in proportion to its training frequency: ``log_q = log(count(j) / sum count)`` is the
    log-probability of that proposal, for the log-Q correction of a sampled softmax (Yi et al., RecSys
    2019, Sec. 4: ``s_c(x, j) = s(x, j) - log p_j``, applied to the positive too: its log-frequency is
    ``extras["pos_log_q"]``). Another query's positive may equal this query's own (an accidental hit);
    losses that care mask it with ``Negatives.accidental_hits()``.

    With ``positives`` (``exclude_positives``), a negative that is one of the query's user's training
    positives also gets weight 0: a user's other positives in the batch, a session's own items.

    Args:
        counts: ``[n_items]`` training interactions per item.
        n_negatives: positions per batch (None: all).
        seed: generator seed.
        positives: the training positives to exclude, by the queries' ids.
    """

    def __init__(self, counts: np.ndarray, n_negatives: int | None, seed: int,
                 positives: PositiveSet | None = None) -> None:
        super().__init__(len(counts), seed)
        self.n_negatives = n_negatives
        self.positive_set = positives
        with np.errstate(divide="ignore"):
            log_frequency = np.log(counts / max(1, counts.sum()))
        self.register_buffer("_log_frequency", torch.from_numpy(log_frequency.astype(np.float32)), persistent=False)

    @classmethod
    def from_config(cls, config: InBatchConfig, train: Interactions, seed: int) -> InBatchSampler:
        positives = PositiveSet(train.csr()) if config.exclude_positives else None
        return cls(train.item_counts(), config.n_negatives, seed, positives)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        batch = positives.shape[0]
        device = positives.device
        # Under DDP the batch is the global one: every process's positives, this process's at `offset`.
        every, offset = _across_processes(positives)  # [G], G >= B
        if len(every) < 2:
            raise ValueError("in-batch negatives need a batch of at least 2")
        if self.n_negatives is None or self.n_negatives >= len(every):
            positions = torch.arange(len(every), device=device)
        else:
            positions = torch.randperm(len(every), generator=self.generator(device), device=device)[: self.n_negatives]
        items = every[positions]  # [N], shared by the batch
        own = positions.unsqueeze(0) == (offset + torch.arange(batch, device=device)).unsqueeze(1)  # [B, N]
        if self.positive_set is not None:
            own |= self.positive_set.contains(queries.unsqueeze(1), items.unsqueeze(0))
        log_q = self._log_frequency[items]
        shape = (batch, len(positions))
        return Negatives(
            items=items.unsqueeze(0).expand(shape),
            log_q=log_q.unsqueeze(0).expand(shape),
            weight=(~own).to(log_q.dtype),
            pos_weight=torch.ones((1,), dtype=log_q.dtype, device=device).expand(batch),
            extras={"pos_log_q": self._log_frequency[positives]},
            unit_weights=False,
        )


def _across_processes(positives: Tensor) -> tuple[Tensor, int]:
    """``positives [B]`` of every process of a DDP run, concatenated in rank order, and where this
    process's start; ``(positives, 0)`` without a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return positives, 0
    world = dist.get_world_size()
    size = torch.tensor([len(positives)], device=positives.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]
    padded = torch.nn.functional.pad(positives, (0, max(lengths) - len(positives)))
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    every = torch.cat([part[:length] for part, length in zip(gathered, lengths, strict=True)])
    return every, sum(lengths[: dist.get_rank()])
