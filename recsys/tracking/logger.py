"""A Lightning logger that writes epoch-level metrics into an open ``TrackedRun``, stepped by epoch."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from recsys.tracking.run import TrackedRun

__all__ = ["EpochLogger"]


class EpochLogger(Logger):
    """Logs every metric Lightning hands over with ``step = epoch`` and keeps a per-epoch history.

    ``run`` is attached after the Trainer is built, so that a bad Trainer argument fails before any
    MLflow run exists. ``prefix`` goes before every name it writes to the run and to ``history`` (a
    refit's ``refit/train/loss`` beside the selection run's ``train/loss`` in one MLflow run); the
    caller may change it between stages.
    """

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.run: TrackedRun | None = None
        self.history: dict[int, dict[str, float]] = {}
        self.prefix = prefix

    @property
    def name(self) -> str:
        return "recsys"

    @property
    def version(self) -> str:
        return self.run.run_id if self.run else ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are the resolved config, logged once by the caller."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = int(metrics.pop("epoch", step or 0))
        metrics = {f"{self.prefix}{name}": value for name, value in metrics.items()}
        self.history.setdefault(epoch, {}).update(metrics)
        if self.run is not None and metrics:
            self.run.log_metrics(metrics, step=epoch)
