"""Learning-rate cuts on a validation plateau (``train.lr_decay``), and their replay in a refit.

FuxiCTR, which BARS's and RecZoo's benchmark runs use (``reduce_lr_on_plateau: True``), multiplies the
learning rate by 0.1, floored at 1e-6, after every validation that does not improve the monitored
metric (``BaseModel.checkpoint_and_earlystop`` and ``lr_decay``), and stops after ``patience`` such
validations in a row. The older FuxiCTR of RecZoo's SimpleX runs also reloads the best weights at each
cut (its logs' "Load best model"); ``PlateauDecay`` keeps the current weights. ``PlateauDecay`` makes
the cuts for any recsys model: ``factor`` after every ``patience`` validations without improvement,
down to ``min_lr``, with "improvement" as early stopping counts it (strictly above the best so far). It
records the epochs whose validation cut the rate, so that a refit on train + validation, which has no
validation, can make the same cuts at the same epochs (``ScheduledDecay``): the selection run's
schedule, replayed.

Both log the learning rate of each training epoch as ``train/lr``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

__all__ = ["PlateauDecay", "ScheduledDecay"]


class _Decay(Callback):
    """Cuts every parameter group's learning rate by ``factor``, floored at ``min_lr``; logs the
    rate each epoch trained with."""

    def __init__(self, factor: float, min_lr: float) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.factor = factor
        self.min_lr = min_lr
        self._epoch_lr: float | None = None

    def _cut(self, trainer) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.factor, self.min_lr)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # Read at the start: a plateau cut is made after the epoch's validation, before its end.
        self._epoch_lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._epoch_lr is not None:
            pl_module.log("train/lr", self._epoch_lr, on_epoch=True, on_step=False)


class PlateauDecay(_Decay):
    """Multiplies the learning rate by ``factor`` (down to ``min_lr``) after ``patience`` validations
    in a row that do not raise ``monitor`` above its best; ``cuts`` are the epochs whose validation
    made a cut (the rate is lower from the next epoch on)."""

    def __init__(self, monitor: str, factor: float, patience: int = 1, min_lr: float = 0.0) -> None:
        super().__init__(factor, min_lr)
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.monitor = monitor
        self.patience = patience
        self.best: float | None = None
        self.wait = 0
        self.cuts: list[int] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if value != value:  # NaN never improves, as in early stopping
            value = float("-inf")
        if self.best is None or value > self.best:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self._cut(trainer)
            self.cuts.append(trainer.current_epoch)
            self.wait = 0

    def state_dict(self) -> dict[str, Any]:  # carried in a resumable fit's checkpoints
        return {"best": self.best, "wait": self.wait, "cuts": list(self.cuts)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.wait, self.cuts = state_dict["best"], state_dict["wait"], list(state_dict["cuts"])


class ScheduledDecay(_Decay):
    """Multiplies the learning rate by ``factor`` (down to ``min_lr``) at the start of the epoch
    after each epoch in ``cuts``: a ``PlateauDecay``'s cuts, made again without validation."""

    def __init__(self, cuts: list[int], factor: float, min_lr: float = 0.0) -> None:
        super().__init__(factor, min_lr)
        self.cuts = list(cuts)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # A resumed fit restores the optimizer's rate as it was after its last finished epoch, so
        # each cut is made once: at the start of the epoch it first applies to.
        for _ in range(self.cuts.count(trainer.current_epoch - 1)):
            self._cut(trainer)
        super().on_train_epoch_start(trainer, pl_module)
