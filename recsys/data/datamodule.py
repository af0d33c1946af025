"""The LightningDataModule of a CF split: shuffled (user, item) batches, fixed ranking batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning.pytorch as L

from recsys.data.batching import ShuffledPairs, ranking_batches
from recsys.data.interactions import Split
from recsys.interfaces import RankingBatch

__all__ = ["InteractionDataModule"]


class _Batches:
    """A sized iterable of ready batches (a bare list would read as a list of dataloaders)."""

    def __init__(self, batches: Sequence[RankingBatch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[RankingBatch]:
        return iter(self.batches)


class InteractionDataModule(L.LightningDataModule):
    """Train on ``split.train``; validate on ``split.valid`` masking train items; test on ``split.test``
    masking train and validation items.

    Args:
        split: the data.
        batch_size: training pairs per batch.
        eval_batch_size: users per evaluation batch.
        seed: shuffling seed (epoch ``e`` uses ``seed + e``).
    """

    def __init__(self, split: Split, batch_size: int, eval_batch_size: int, seed: int) -> None:
        super().__init__()
        self.split = split
        self.eval_batch_size = eval_batch_size
        self._train = ShuffledPairs(split.train, batch_size, seed)
        self._valid: _Batches | None = None
        self._test: _Batches | None = None

    def train_dataloader(self) -> ShuffledPairs:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # DDP: each process trains on its rows of every global batch. Evaluation is not sharded:
            # every process ranks every user (the same weights give the same metrics on each).
            self._train.shard(trainer.global_rank, trainer.world_size)
        return self._train

    def val_dataloader(self) -> _Batches:
        if self._valid is None:
            self._valid = _Batches(ranking_batches(self.split.valid, self.split.train, self.eval_batch_size))
        return self._valid

    def test_dataloader(self) -> _Batches:
        if self._test is None:
            known = self.split.train.union(self.split.valid)
            self._test = _Batches(ranking_batches(self.split.test, known, self.eval_batch_size))
        return self._test
