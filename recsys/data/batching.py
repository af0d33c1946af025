"""Batches cut by vectorised indexing of whole tensors (DESIGN.md, "Data flow").

Training: a seeded permutation of all (user, item) pairs sliced into batches, one new permutation per
epoch (``ShuffledPairs``), or as many pairs drawn user by user (``UserUniformPairs``, LightGCN's
reference sampling). Evaluation: fixed ``RankingBatch``es of queries with the items to mask and the items to find.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.interfaces import RankingBatch

__all__ = ["BatchGroups", "exposed_batches", "ShuffledPairs", "UserUniformPairs", "ranking_batches"]


class ShuffledPairs:
    """An iterable of ``(users [b], items [b])`` long batches over all pairs, reshuffled every epoch.

    Epoch ``e`` uses the permutation of a generator seeded with ``seed + e``, so a run is reproducible
    and does not depend on how many times other code drew random numbers.

    Args:
        data: the training interactions.
        batch_size: pairs per batch (the last batch may be smaller).
        seed: base seed.
        shuffle: False keeps the stored order (for tests and deterministic scans).
    """

    def __init__(self, data: Interactions, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.users = torch.from_numpy(data.users.astype(np.int64))
        self.items = torch.from_numpy(data.items.astype(np.int64))
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> None:
        """Serve process ``rank`` of ``world_size`` (DDP): every process walks the same global batches
        (same seeds) and takes rows ``rank, rank + world_size, ...`` of each, so the processes' gradients
        average to the global batch's. A last batch with fewer rows than processes is dropped."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        batches = -(-len(self.users) // self.batch_size)
        if self.world_size > 1 and 0 < len(self.users) % self.batch_size < self.world_size:
            batches -= 1
        return batches

    def _draw(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One epoch's ``(users [n], items [n])``: every pair once, in the generator's order."""
        order = torch.randperm(len(self.users), generator=generator)
        return self.users[order], self.items[order]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.shuffle:
            users, items = self._draw(torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            users, items = self.users, self.items
        self.epoch += 1
        if len(users) == 0:  # `split` would give one empty batch
            return
        if self.world_size == 1:
            yield from zip(users.split(self.batch_size), items.split(self.batch_size), strict=True)
            return
        for user_batch, item_batch in zip(users.split(self.batch_size), items.split(self.batch_size), strict=True):
            if len(user_batch) >= self.world_size:
                yield user_batch[self.rank :: self.world_size], item_batch[self.rank :: self.world_size]


class UserUniformPairs(ShuffledPairs):
    """Pairs drawn user-uniformly: each of an epoch's ``n`` pairs (``n`` = the number of training
    pairs) takes a user uniformly from the users with a training item, then one of that user's items
    uniformly, with replacement.

    This is how both LightGCN reference implementations feed BPR (He et al., SIGIR 2020):
    gusye1234/LightGCN-PyTorch ``UniformSample_original`` draws ``trainDataSize`` users uniformly and
    a random positive of each; kuandeng/LightGCN draws each batch's users with ``rd.sample`` over the
    users with items. A user's weight in the loss is then 1 / n_users instead of degree / n (as with
    ``ShuffledPairs``), so light users count as much as heavy ones, as they do in Recall@20, which
    averages over users. Same interface, seeding and DDP sharding as ``ShuffledPairs``.

    Args:
        data: the training interactions.
        batch_size: pairs per batch (the last batch may be smaller).
        seed: base seed (epoch ``e`` draws with ``seed + e``).
    """

    def __init__(self, data: Interactions, batch_size: int, seed: int) -> None:
        super().__init__(data, batch_size, seed)
        matrix = data.csr()
        degrees = np.diff(matrix.indptr)
        self.active = torch.from_numpy(np.flatnonzero(degrees).astype(np.int64))  # users with an item
        self.starts = torch.from_numpy(matrix.indptr[:-1].astype(np.int64))  # [n_users]
        self.degrees = torch.from_numpy(degrees.astype(np.int64))  # [n_users]
        self.columns = torch.from_numpy(matrix.indices.astype(np.int64))  # [nnz], row by row

    def _draw(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(users [n], items [n])``: ``n`` users uniform over ``active``, an item of each uniform
        over its row (floor(U * degree) is uniform on 0..degree-1)."""
        n = len(self.users)
        if n == 0:
            return self.users, self.items
        users = self.active[torch.randint(len(self.active), (n,), generator=generator)]
        offsets = (torch.rand(n, generator=generator, dtype=torch.float64) * self.degrees[users]).long()
        return users, self.columns[self.starts[users] + offsets]


class BatchGroups:
    """Consecutive batches of ``batches`` handed out ``per_call`` at a time, as lists.

    Lightning spends about 0.3 ms of bookkeeping on every ``training_step`` call (measured on this
    project's CPU: 12 of a 59 ms MF epoch on ml-100k, whose 40 steps take about 1.2 ms each). A module
    that takes a list of batches per call and steps its optimizer once per batch
    (``RecommenderModule.training_step``) pays that once per group; training is unchanged, batch by
    batch, and Lightning's optimizer step count still counts batches.

    Args:
        batches: a sized iterable of batches (``ShuffledPairs``, ``ShuffledSessions``).
        per_call: batches per group (the last group may be shorter); None: as many as make at most
            ``calls`` groups per epoch.
        calls: the number of groups per epoch that ``per_call=None`` aims at (the progress bar's
            refreshes: it redraws about ten times per epoch either way).
    """

    def __init__(self, batches: Any, per_call: int | None = None, calls: int = 10) -> None:
        if per_call is not None and per_call < 1:
            raise ValueError(f"per_call must be >= 1, got {per_call}")
        self.batches = batches
        self.per_call = per_call
        self.calls = calls

    def _size(self) -> int:
        return self.per_call if self.per_call is not None else max(1, -(-len(self.batches) // self.calls))

    def __len__(self) -> int:
        return -(-len(self.batches) // self._size())

    def __iter__(self) -> Iterator[list[tuple[Tensor, ...]]]:
        size, group = self._size(), []
        for batch in self.batches:
            group.append(batch)
            if len(group) == size:
                yield group
                group = []
        if group:
            yield group


def ranking_batches(target: Interactions, exclude: Interactions, batch_size: int) -> list[RankingBatch]:
    """Evaluation batches for every user with at least one ``target`` item.

    Args:
        target: the held-out interactions to find (validation or test).
        exclude: the known interactions to mask in the ranking (train; train + validation for test).
        batch_size: users per batch.
    """
    exclude_matrix = exclude.csr()
    return _batches(target, batch_size, lambda chunk: _rows_and_columns(exclude_matrix, chunk))


def exposed_batches(target: Interactions, candidates: Interactions, batch_size: int) -> list[RankingBatch]:
    """Evaluation batches that rank, for every user with a ``target`` item, only that user's
    ``candidates`` (the randomly exposed test items; Saito et al., WSDM 2020, Sec. 6): every other item
    is masked, so the metric kernels of full ranking apply unchanged.

    Args:
        target: the relevant exposed interactions (a subset of ``candidates``).
        candidates: every exposed (user, item) pair of the test set.
        batch_size: users per batch.
    """
    candidate_matrix = candidates.csr()

    def unexposed(chunk: np.ndarray) -> tuple[Tensor, Tensor]:
        # The complement of each user's candidates, from a dense [chunk, n_items] mask: exposed test
        # sets are small catalogues (1,000 songs, 300 coats).
        hidden = np.ones((len(chunk), candidates.n_items), dtype=bool)
        hidden[candidate_matrix[chunk].nonzero()] = False
        rows, cols = np.nonzero(hidden)
        return torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(cols.astype(np.int64))

    return _batches(target, batch_size, unexposed)


def _batches(
    target: Interactions, batch_size: int, excluded: Callable[[np.ndarray], tuple[Tensor, Tensor]]
) -> list[RankingBatch]:
    """One batch per ``batch_size`` users with a ``target`` item; ``excluded(chunk)`` gives the masked
    (position in chunk, item) pairs."""
    target_matrix = target.csr()
    users = np.flatnonzero(np.diff(target_matrix.indptr) > 0)
    batches = []
    for start in range(0, len(users), batch_size):
        chunk = users[start : start + batch_size]
        exclude_rows, exclude_cols = excluded(chunk)
        relevant_rows, relevant_cols = _rows_and_columns(target_matrix, chunk)
        batches.append(
            RankingBatch(
                queries=torch.from_numpy(chunk.astype(np.int64)),
                exclude_rows=exclude_rows,
                exclude_cols=exclude_cols,
                relevant_rows=relevant_rows,
                relevant_cols=relevant_cols,
            )
        )
    return batches


def _rows_and_columns(matrix, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """Non-zeros of ``matrix[rows]`` as (position in ``rows``, column) long tensors."""
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    lengths = ends - starts
    positions = np.repeat(np.arange(len(rows)), lengths)
    # Gather each row's slice of `indices` without a Python loop: offsets within each row + its start.
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    columns = matrix.indices[np.repeat(starts, lengths) + within]
    return torch.from_numpy(positions.astype(np.int64)), torch.from_numpy(columns.astype(np.int64))
