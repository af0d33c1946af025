"""The LightningDataModule of a session split: shuffled next-item batches, fixed evaluation batches."""

from __future__ import annotations

import lightning.pytorch as L

from recsys.data.batching import BatchGroups
from recsys.data.sessions.batching import ShuffledSessions
from recsys.data.sessions.sessions import SessionSplit

__all__ = ["SessionDataModule"]


class SessionDataModule(L.LightningDataModule):
    """Train on ``split.train``, validate on ``split.valid``, test on ``split.test``.

    Every loader yields ``(sessions [B], inputs [B, max_len], targets [B, max_len])`` long tensors: the
    rows' session indices, then item id + 1 with 0 for padding (see ``recsys.data.sessions.batching``). Training batches are reshuffled each epoch;
    evaluation batches keep the sessions' stored order. A split without validation sessions gives an
    empty validation loader, which Lightning skips.

    Args:
        split: the sessions.
        batch_size: sessions per training batch.
        eval_batch_size: sessions per validation/test batch.
        max_len: model input length; each session contributes its last ``max_len + 1`` events.
        seed: shuffling seed (epoch ``e`` uses ``seed + e``).
        batches_per_call: training batches per ``training_step`` call (``BatchGroups``); None: about
            ten calls per epoch.
    """

    def __init__(self, split: SessionSplit, batch_size: int, eval_batch_size: int, max_len: int = 50,
                 seed: int = 0, batches_per_call: int | None = None) -> None:
        super().__init__()
        self.split = split
        self.max_len = max_len
        self._train = ShuffledSessions(split.train, batch_size, max_len, seed)
        self._groups = BatchGroups(self._train, batches_per_call)
        self._valid = ShuffledSessions(split.valid, eval_batch_size, max_len, shuffle=False)
        self._test = ShuffledSessions(split.test, eval_batch_size, max_len, shuffle=False)

    @property
    def n_items(self) -> int:
        """Items in the id space; the embedding table needs ``n_items + 1`` rows (row 0: padding)."""
        return self.split.n_items

    # Lightning keeps a data module's state in its checkpoints: the epoch count, which seeds the next
    # epoch's shuffle, so a resumed fit (recsys.fit_state) shuffles as an uninterrupted one would.
    def state_dict(self) -> dict[str, int]:
        return {"train_epoch": self._train.epoch}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._train.epoch = int(state_dict["train_epoch"])

    def train_dataloader(self) -> BatchGroups:
        return self._groups

    def val_dataloader(self) -> ShuffledSessions:
        return self._valid

    def test_dataloader(self) -> ShuffledSessions:
        return self._test
