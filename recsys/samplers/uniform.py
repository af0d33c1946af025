"""Uniform negative sampling, optionally excluding each user's training positives."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field, model_validator
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.interfaces import Negatives, ScoreFn, Section
from recsys.samplers.base import Sampler
from recsys.samplers.pool import block_rows
from recsys.samplers.positives import PositiveSet

__all__ = ["UniformConfig", "UniformSampler"]


class UniformConfig(Section):
    """``sampler.name: uniform``.

    ``shared: true`` draws one set of ``n_negatives`` items for the whole batch (TRON's "batchwise"
    negatives: a ``[B, N]`` view of ``N`` draws, scored with one GEMM); with
    ``exclude_batch_positives`` that set never contains an item that is a positive in the batch, and
    with ``exclude_positives`` each query's own training positives among it get weight 0.

    ``pool: P`` draws one pool of ``P`` uniform items per batch and gives each query a random window of
    ``n_negatives`` consecutive pool entries: each query's negatives are still uniform, but all of a
    batch's come from ``P`` items, so a candidate scorer can score the pool with one GEMM
    (``extras["pool"]``, ``extras["pool_index"]``); ``exclude_positives`` then gives each query's own
    training positives weight 0.

    ``windows: blocks`` lays the pool out as ``pool // n_negatives`` blocks instead: the batch's rows are
    cut into as many contiguous runs, and each run's queries all take one block. Each query's negatives
    are still ``n_negatives`` i.i.d. uniform items, but a candidate scorer needs only each run's
    products with its block (one batched GEMM): at 2048 x 64 of a pool of 256, a quarter of the work.
    """

    name: Literal["uniform"] = "uniform"
    n_negatives: int = Field(1, ge=1)  # negatives per positive (per batch when shared)
    exclude_positives: bool = False  # never return one of the user's training items
    shared: bool = False
    exclude_batch_positives: bool = False
    pool: int | None = Field(None, ge=1)
    windows: Literal["random", "blocks"] = "random"

    @model_validator(mode="after")
    def _compatible(self) -> UniformConfig:
        if self.exclude_batch_positives and not self.shared:
            raise ValueError("exclude_batch_positives needs shared: true")
        if self.pool is not None and (self.shared or self.pool < self.n_negatives):
            raise ValueError("pool must hold at least n_negatives items and cannot be shared")
        if self.windows == "blocks" and self.pool is None:
            raise ValueError("windows: blocks needs a pool")
        return self


class UniformSampler(Sampler):
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

    ``log_q = -log(n_items - |positives(u)|)``, the exact log-probability of each draw (``-log(n_items)``
    without exclusion; ``-log(n_items - |batch positives|)`` for shared draws that exclude them).

    Args:
        n_items: catalogue size.
        n_negatives: ``N``, negatives per query.
        positives: ``[n_users, n_items]`` CSR of training positives, when they are excluded.
        seed: seed of the sampler's own generator.
        table_entries: the most non-positive (user, item) pairs to store as a complement table.
        shared: one draw of ``n_negatives`` items per batch, shared by all its queries.
        exclude_batch_positives: with ``shared``, redraw any item that is a positive in the batch.
        pool: per batch, one pool of this many items; each query takes a random window of it.
        windows: ``random`` windows of the pool, or ``blocks`` (see ``UniformConfig``).
    """

    def __init__(
        self,
        n_items: int,
        n_negatives: int,
        positives: sp.csr_array | None = None,
        seed: int = 0,
        table_entries: int = 2**25,
        shared: bool = False,
        exclude_batch_positives: bool = False,
        pool: int | None = None,
        windows: Literal["random", "blocks"] = "random",
    ) -> None:
        super().__init__(n_items, seed)
        self.windows = windows
        self.n_negatives = n_negatives
        self.exclude_positives = positives is not None
        self.shared = shared
        self.exclude_batch_positives = exclude_batch_positives
        self.pool = pool
        masked = shared or pool is not None
        # Shared and pooled draws cannot skip each user's positives; they are masked with weight 0.
        self.positive_set = PositiveSet(positives) if masked and positives is not None else None
        if positives is not None and not masked:
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
        return cls(
            train.n_items, config.n_negatives, positives, seed,
            shared=config.shared, exclude_batch_positives=config.exclude_batch_positives, pool=config.pool,
            windows=config.windows,
        )

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        """Args: queries ``[B]`` user ids, positives ``[B]``. Returns ``Negatives`` of ``[B, N]``."""
        generator = self.generator(queries.device)
        shape = (queries.shape[0], self.n_negatives)
        if self.shared:
            return self._shared(queries, positives, shape, generator)
        if self.pool is not None:
            return self._pooled(queries, shape, generator)
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

    def _pooled(self, queries: Tensor, shape: tuple[int, int], generator: torch.Generator) -> Negatives:
        """Each query's ``N`` negatives: a random window of ``N`` consecutive entries of a ``P``-item pool."""
        device = queries.device
        if self.windows == "blocks":
            n_blocks = self.pool // shape[1]
            pool = torch.randint(self.n_items, (n_blocks * shape[1],), generator=generator, device=device)
            start = (block_rows(shape[0], n_blocks, device) * shape[1]).unsqueeze(1)  # [B, 1]
        else:
            pool = torch.randint(self.n_items, (self.pool,), generator=generator, device=device)  # [P]
            # Windows start where they fit (no wrap-around to compute): pool entries are i.i.d. uniform,
            # so every window is N i.i.d. uniform items wherever it starts.
            start = torch.randint(self.pool - shape[1] + 1, (shape[0], 1), generator=generator, device=device)
        index = start + torch.arange(shape[1], device=device)  # [B, N]
        # Rows of the pool's [P - N + 1, N] window view: contiguous copies (0.007 ms at 2048 x 64,
        # where an element-wise torch.take of the index costs 0.076).
        items = pool.unfold(0, shape[1], 1).index_select(0, start.view(-1))
        log_q = torch.full((1, 1), -math.log(self.n_items), device=device).expand(shape)
        negatives = Negatives.unweighted(items, log_q)
        extras = {"pool": pool, "pool_index": index}
        if self.windows == "blocks":
            extras["pool_blocks"] = pool.view(-1, shape[1])  # [G, N]
        if self.positive_set is None:
            return replace(negatives, extras=extras)
        own = self.positive_set.contains(queries.unsqueeze(1), items)  # [B, N]
        return replace(negatives, extras=extras, weight=(~own).to(log_q.dtype), unit_weights=False)

    def _shared(
        self, queries: Tensor, positives: Tensor, shape: tuple[int, int], generator: torch.Generator
    ) -> Negatives:
        """``N`` draws for the whole batch, as a ``[B, N]`` view (stride 0 over the batch)."""
        device = positives.device
        items = torch.randint(self.n_items, (shape[1],), generator=generator, device=device)
        n_allowed = self.n_items
        if self.exclude_batch_positives:
            taken = torch.unique(positives)
            n_allowed = self.n_items - len(taken)
            if n_allowed <= 0:
                raise ValueError("every item is a positive in this batch: no shared negative exists")
            rejected = torch.isin(items, taken)
            while bool(rejected.any()):  # each round keeps a draw with probability n_allowed / n_items
                redrawn = torch.randint(self.n_items, (int(rejected.sum()),), generator=generator, device=device)
                items[rejected] = redrawn
                rejected[rejected.clone()] = torch.isin(redrawn, taken)
        log_q = torch.full((1, shape[1]), -math.log(n_allowed), device=device).expand(shape)
        negatives = Negatives.unweighted(items.unsqueeze(0).expand(shape), log_q)
        if self.positive_set is None:
            return negatives
        own = self.positive_set.contains(queries.unsqueeze(1), items.unsqueeze(0))  # [B, N]
        return replace(negatives, weight=(~own).to(log_q.dtype), unit_weights=False)


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
