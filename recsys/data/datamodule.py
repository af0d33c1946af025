"""The LightningDataModule of a CF split: shuffled (user, item) batches, fixed ranking batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning.pytorch as L

from recsys.data.batching import BatchGroups, ShuffledPairs, UserUniformPairs, exposed_batches, ranking_batches
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
    masking train and validation items (``protocol: full``), or by ranking each test user's exposed items
    only (``protocol: exposed``, a split with ``exposure``), then again over exposed rare items (at most
    ``rare_max_count`` training positives) as a second test dataloader.

    Args:
        split: the data.
        batch_size: training pairs per batch.
        eval_batch_size: users per evaluation batch.
        seed: shuffling seed (epoch ``e`` uses ``seed + e``).
        protocol: ``full`` or ``exposed``.
        rare_max_count: with ``exposed``, the rare-item bound (None: no rare pass).
        batches_per_call: training batches per ``training_step`` call (see ``BatchGroups``); None:
            about ten calls per epoch.
        pair_sampling: ``interactions`` (every training pair once per epoch, ``ShuffledPairs``) or
            ``users`` (as many pairs drawn user-uniformly, ``UserUniformPairs``).
        validate_on_test: "validation" ranks the test set (its first pass) instead: a refit's test
            curve (``train.refit_test_every``), which has no validation set to rank and selects nothing.
    """

    def __init__(
        self, split: Split, batch_size: int, eval_batch_size: int, seed: int,
        protocol: str = "full", rare_max_count: int | None = None, batches_per_call: int | None = None,
        pair_sampling: str = "interactions", validate_on_test: bool = False,
    ) -> None:
        super().__init__()
        if protocol == "exposed" and split.exposure is None:
            raise ValueError("protocol 'exposed' needs a split with an exposed test set")
        self.split = split
        self.eval_batch_size = eval_batch_size
        self.protocol = protocol
        self.rare_max_count = rare_max_count
        self.validate_on_test = validate_on_test
        if pair_sampling not in ("interactions", "users"):
            raise ValueError(f"pair_sampling must be 'interactions' or 'users', got {pair_sampling!r}")
        self._train = (UserUniformPairs(split.train, batch_size, seed) if pair_sampling == "users"
                       else ShuffledPairs(split.train, batch_size, seed))
        self._groups = BatchGroups(self._train, batches_per_call)
        self._valid: _Batches | None = None
        self._test: _Batches | list[_Batches] | None = None

    # Lightning keeps a data module's state in its checkpoints: the epoch count, which seeds the next
    # epoch's shuffle, so a resumed fit (recsys.fit_state) shuffles as an uninterrupted one would.
    def state_dict(self) -> dict[str, int]:
        return {"train_epoch": self._train.epoch}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._train.epoch = int(state_dict["train_epoch"])

    @property
    def test_stages(self) -> tuple[str, ...]:
        """Metric namespace of each test dataloader: ``test`` (and ``test/rare``)."""
        if self.protocol == "exposed" and self.rare_max_count is not None:
            return ("test", "test/rare")
        return ("test",)

    def train_dataloader(self) -> BatchGroups:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # DDP: each process trains on its rows of every global batch. Evaluation is not sharded:
            # every process ranks every user (the same weights give the same metrics on each).
            self._train.shard(trainer.global_rank, trainer.world_size)
        return self._groups

    def val_dataloader(self) -> _Batches:
        if self.validate_on_test:
            test = self.test_dataloader()
            return test[0] if isinstance(test, list) else test
        if self._valid is None:
            self._valid = _Batches(ranking_batches(self.split.valid, self.split.train, self.eval_batch_size))
        return self._valid

    def test_dataloader(self) -> _Batches | list[_Batches]:
        if self._test is None:
            self._test = self._exposed() if self.protocol == "exposed" else self._full()
        return self._test

    def _full(self) -> _Batches:
        known = self.split.train.union(self.split.valid)
        return _Batches(ranking_batches(self.split.test, known, self.eval_batch_size))

    def _exposed(self) -> _Batches | list[_Batches]:
        test, exposure = self.split.test, self.split.exposure
        assert exposure is not None  # checked in __init__
        passes = [_Batches(exposed_batches(test, exposure, self.eval_batch_size))]
        if self.rare_max_count is not None:
            rare = self.split.train.item_counts() <= self.rare_max_count  # [n_items]
            passes.append(_Batches(exposed_batches(
                test.select(rare[test.items]), exposure.select(rare[exposure.items]), self.eval_batch_size
            )))
        return passes[0] if len(passes) == 1 else passes
