"""Uniform negative sampling, optionally excluding each user's training positives."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import Tensor, nn

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.interfaces import Negatives, ScoreFn, Section

__all__ = ["UniformConfig", "UniformSampler"]



class UniformConfig(Section):
    """``sampler.name: uniform``."""

    name: Literal["uniform"] = "uniform"
    n_negatives: int = Field(1, ge=1)  # negatives per positive
    exclude_positives: bool = False  # never return one of the user's training items


class UniformSampler(nn.Module):
    """Negatives drawn uniformly from the catalogue (Rendle et al., BPR, UAI 2009, Sec. 4.3).

    With ``exclude_positives`` a user's negatives are uniform over the items they did not interact
    with: draw ``r`` uniform in ``[0, n_items - |positives(u)|)`` and return the user's ``r``-th
    non-positive item, found in one of two exact ways, vectorised over the batch:

    - *Complement table* (when all users' non-positives fit in ``table_entries``): the non-positive
      items of every user, concatenated; one gather. ml-100k and ml-1m fit.
    - *Skip counting* (any size): with the user's sorted positives ``p_0 < p_1 < ...`` and
      ``a_k = p_k - k`` (the number of non-positives before ``p_k``), the ``r``-th non-positive item is
      ``r + #{k : a_k <= r}``; one ``searchsorted`` over all users' ``a_k`` (offset per user) counts
      them for the whole batch. Its random branches cost about 50 ns per draw on a CPU, which is why
      the table is preferred where it fits.

    ``log_q = -log(n_items - |positives(u)|)``, the exact log-probability of each draw.

    Args:
        n_items: catalogue size.
        n_negatives: ``N``, negatives per query.
        positives: ``[n_users, n_items]`` CSR of training positives, when they are excluded.
        seed: seed of the sampler's own generator.
        table_entries: the most non-positive (user, item) pairs to store as a complement table.
    """

    def __init__(
        self,
        n_items: int,
        n_negatives: int,
        positives: sp.csr_array | None = None,
        seed: int = 0,
        table_entries: int = 2**25,
    ) -> None:
        super().__init__()
        self.n_items = n_items
        self.n_negatives = n_negatives
        self.exclude_positives = positives is not None
        self.seed = seed
        self._generator: torch.Generator | None = None
        if positives is not None:
            keys, indptr, n_free = _exclusion_tables(positives, n_items)
            table = _complement_table(positives, n_items) if int(n_free.sum()) <= table_entries else None
            # Per user: the number of non-positives and where the user's entries start (in the
            # complement table, or among the skip keys) - one gather per step reads both.
            offset = torch.cumsum(n_free, 0) - n_free if table is not None else indptr[:-1]
            self.register_buffer("_per_user", torch.stack([n_free, offset], dim=1), persistent=False)
            self.register_buffer("_log_q", -torch.log(n_free.to(torch.float32)), persistent=False)
            self.register_buffer("_complement", table, persistent=False)
            self.register_buffer("_skip_keys", keys if table is None else None, persistent=False)

    @classmethod
    def from_config(cls, config: UniformConfig, train: Interactions, seed: int) -> UniformSampler:
        positives = train.csr() if config.exclude_positives else None
        return cls(train.n_items, config.n_negatives, positives, seed)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        """Args: queries ``[B]`` user ids, positives ``[B]``. Returns ``Negatives`` of ``[B, N]``."""
        generator = self._generator_on(queries.device)
        shape = (queries.shape[0], self.n_negatives)
        if not self.exclude_positives:
            items = torch.randint(self.n_items, shape, generator=generator, device=queries.device)
            log_q = torch.full(shape, -math.log(self.n_items), device=queries.device)
            return Negatives.unweighted(items, log_q)
        log_q = self._log_q[queries].unsqueeze(1).expand(shape)  # a view: read-only by contract
        return Negatives.unweighted(self._non_positive(queries.unsqueeze(1), shape, generator), log_q)

    def _non_positive(self, users: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Uniform non-positive items of ``users`` (broadcastable to ``shape``) -> ``shape`` long."""
        per_user = self._per_user[users]  # [..., 2]
        n_free, offset = per_user[..., 0], per_user[..., 1]
        # Uniform integers in [0, n_free(u)): modulo of a 62-bit draw, bias below n_free / 2**62.
        rank = torch.randint(2**62, shape, generator=generator, device=users.device) % n_free
        if self._complement is not None:
            return self._complement[offset + rank].long()
        skipped = torch.searchsorted(self._skip_keys, users * (self.n_items + 1) + rank, right=True)
        return rank + skipped - offset

    def _generator_on(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator


def _exclusion_tables(positives: sp.csr_array, n_items: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted keys ``u * (n_items + 1) + (p_k - k)``, the CSR row pointer, and non-positives per user."""
    positives = sp.csr_array(positives)
    positives.sum_duplicates()
    positives.sort_indices()
    counts = np.diff(positives.indptr)
    n_free = n_items - counts
    if (n_free <= 0).any():
        user = int(np.argmax(n_free <= 0))
        raise ConfigError(
            f"sampler.exclude_positives: user {user} interacted with every item, so no negative exists"
        )
    rows = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(len(rows)) - np.repeat(positives.indptr[:-1], counts)  # k within the row
    keys = rows.astype(np.int64) * (n_items + 1) + (positives.indices - within)
    return (
        torch.from_numpy(keys.astype(np.int64)),
        torch.from_numpy(positives.indptr.astype(np.int64)),
        torch.from_numpy(n_free.astype(np.int64)),
    )


def _complement_table(positives: sp.csr_array, n_items: int) -> Tensor:
    """Every user's non-positive items in increasing order, users one after another (int32)."""
    dense = np.ones((positives.shape[0], n_items), dtype=bool)
    rows = np.repeat(np.arange(positives.shape[0]), np.diff(positives.indptr))
    dense[rows, positives.indices] = False
    _, items = np.nonzero(dense)
    return torch.from_numpy(items.astype(np.int32))
