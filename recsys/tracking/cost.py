"""The cost of every epoch: training seconds, evaluation seconds, peak resident memory."""

from __future__ import annotations

import resource
import sys
import time

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["EpochCost", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class EpochCost(Callback):
    """Logs ``time/epoch_train_s``, ``time/eval_s`` and ``sys/peak_rss_mb`` each training epoch, and
    ``time/test_eval_s`` after testing.

    Training time runs from the epoch's start to the start of its validation (or its end when it has
    none); device work is synchronised at those points only, not per batch.
    """

    def __init__(self) -> None:
        self._epoch_start = 0.0
        self._train_seconds: float | None = None
        self._eval_start = 0.0
        self._eval_seconds: float | None = None
        self._test_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module)
        self._epoch_start = time.perf_counter()
        self._train_seconds = None
        self._eval_seconds = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        _synchronize(pl_module)
        now = time.perf_counter()
        if self._train_seconds is None:
            self._train_seconds = now - self._epoch_start
        self._eval_start = now

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        _synchronize(pl_module)
        self._eval_seconds = time.perf_counter() - self._eval_start

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module)
        self._test_start = time.perf_counter()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module)
        seconds = time.perf_counter() - self._test_start
        # Hooks after the test loop cannot use `log`; hand the figure to the loggers directly.
        for logger in trainer.loggers:
            logger.log_metrics({"time/test_eval_s": seconds, "sys/peak_rss_mb": peak_rss_mb()},
                               step=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._train_seconds is None:
            _synchronize(pl_module)
            self._train_seconds = time.perf_counter() - self._epoch_start
        pl_module.log("time/epoch_train_s", self._train_seconds)
        if self._eval_seconds is not None:
            pl_module.log("time/eval_s", self._eval_seconds)
        pl_module.log("sys/peak_rss_mb", peak_rss_mb())


def _synchronize(pl_module: L.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
