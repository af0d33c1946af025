"""A fit's resumable state on disk (``recsys fit --state-dir DIR``): run the same command again to
continue an interrupted fit from its last finished epoch, in the same MLflow run.

``DIR/fit.json`` names the MLflow run, the tracking URI and the resolved config, and says how far the
fit got: ``select`` (training with validation; its checkpoints go in ``DIR``), ``refit`` (training
on train + validation; the selection's outcome is kept in the file) or ``finished``. After every
training epoch ``ResumePoint`` replaces ``DIR/<stage>-last.ckpt`` with a whole Lightning checkpoint:
weights, optimizer, loops, callbacks (early stopping's patience, the best checkpoint so far, the
time budget already spent), the data module's epoch (which seeds the epoch's shuffle), the samplers'
generators, torch's global generator (dropout) and the per-epoch history. A resumed fit is the same
computation as an uninterrupted one, epoch for epoch (``tests/test_resume.py``), on the device it
started on; a sampler resumed on another kind of device starts its generator afresh from the seed.

Every file is written whole (to a temporary name, then renamed), so a fit killed at any moment
leaves the previous epoch's state intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from recsys.config import ExperimentConfig, resolve_config
from recsys.errors import ConfigError

__all__ = ["FitState", "ResumePoint"]

_FILE = "fit.json"


class FitState:
    """The state folder of one fit. ``open`` checks that a folder's fit is this one (same config,
    same tracking URI) and not finished; a missing or empty folder starts a new fit."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record

    @classmethod
    def open(cls, path: Path, config: ExperimentConfig, tracking_uri: str) -> FitState:
        wanted = {"config": config.to_dict(), "tracking_uri": tracking_uri}
        file = path / _FILE
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--state-dir {path}: not a folder")
        if not file.is_file():
            if path.is_dir() and any(path.iterdir()):
                raise ConfigError(f"--state-dir {path}: the folder holds files but no {_FILE}; give an "
                                  "empty or new folder")
            return cls(path, {**wanted, "run_id": "", "stage": "select"})
        try:
            record = json.loads(file.read_text())
            saved_config, run_id = record["config"], record["run_id"]
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{file}: not a recsys fit state ({type(error).__name__})") from None
        if record.get("stage") == "finished":
            raise ConfigError(f"--state-dir {path}: its fit finished (MLflow run {run_id}); give another folder")
        if record.get("tracking_uri") != tracking_uri:
            raise ConfigError(f"--state-dir {path}: its fit is tracked in {record.get('tracking_uri')}, "
                              f"not {tracking_uri}")
        difference = _first_difference(_with_defaults(saved_config), wanted["config"])
        if difference is not None:
            raise ConfigError(f"{config.source}: {difference}: differs from the interrupted fit in {path} "
                              "(resume with its config, or give another --state-dir)")
        return cls(path, record)

    @property
    def run_id(self) -> str:
        """The MLflow run to continue ('' for a new fit)."""
        return self.record["run_id"]

    @property
    def stage(self) -> str:
        return self.record["stage"]

    def last(self, stage: str) -> Path:
        """Where ``stage``'s per-epoch checkpoint lives."""
        return self.path / f"{stage}-last.ckpt"

    def resumable(self, stage: str) -> Path | None:
        """``stage``'s last checkpoint if the fit stopped during that stage, else None (start it)."""
        last = self.last(stage)
        return last if self.stage == stage and last.is_file() else None

    def begin(self, run_id: str, resumed: bool) -> None:
        """Record the run of a new fit, or count a resumption (the run's ``resumes`` tag)."""
        self.record["run_id"] = run_id
        if resumed:
            self.record["resumes"] = self.record.get("resumes", 0) + 1
        self._write()

    def enter(self, stage: str, **outcome: Any) -> None:
        """Move to ``stage``, keeping what the earlier stage found (a selection's outcome)."""
        self.record["stage"] = stage
        self.record.update(outcome)
        self._write()

    def finish(self) -> None:
        """Mark the fit finished and drop its per-epoch checkpoints (the run holds what it kept)."""
        self.enter("finished")
        for stage in ("select", "refit"):
            self.last(stage).unlink(missing_ok=True)
            _partial(self.last(stage)).unlink(missing_ok=True)

    def _write(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _replace(self.path / _FILE, lambda target: target.write_text(json.dumps(self.record, indent=1)))


class ResumePoint(Callback):
    """Saves a whole checkpoint to ``path`` after every training epoch, and carries in it what
    Lightning does not: the run's per-epoch history (``EpochLogger.history``: the best epoch and its
    validation metrics are read from it at the end) and torch's global generators (dropout's).

    The checkpoint is taken at the end of the epoch (after its validation, early stopping and best
    checkpoint) into a temporary file, and renamed onto ``path`` at the start of the next epoch (or
    at the end of training), after Lightning has written the epoch's metrics to the run: a fit stopped
    in between resumes from the epoch before, redoing one epoch (the same values logged again at the
    same step) rather than leaving an epoch's metrics out.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._trainer = None
        self._written = False  # a checkpoint of this process waits in the temporary file

    @property
    def _temporary(self) -> Path:
        return _partial(self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._written = False
        trainer.save_checkpoint(self._temporary, weights_only=False)
        self._written = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._publish()

    def on_train_end(self, trainer, pl_module) -> None:
        self._publish()

    def _publish(self) -> None:
        if self._written:
            os.replace(self._temporary, self.path)
            self._written = False

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        history = getattr(self._trainer.logger, "history", None) if self._trainer is not None else None
        if history is not None:
            state["history"] = {str(epoch): dict(values) for epoch, values in history.items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callback states after `setup`, so the trainer and its logger are known.
        torch.set_rng_state(state_dict["torch_rng"])
        if "cuda_rng" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda_rng"])
        history = getattr(self._trainer.logger, "history", None) if self._trainer is not None else None
        if history is not None:
            history.update({int(epoch): values for epoch, values in state_dict.get("history", {}).items()})

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def _replace(target: Path, write) -> None:
    """Call ``write(temporary)``, then rename the temporary file onto ``target`` (whole or not at all)."""
    temporary = _partial(target)
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _with_defaults(saved: Any) -> Any:
    """A saved config with the defaults of keys added to recsys since it was written (a new key's
    default keeps what came before), so that such a fit still resumes; as saved if it no longer
    validates (the comparison then names the key)."""
    try:
        return resolve_config(saved).to_dict() if isinstance(saved, dict) else saved
    except ConfigError:
        return saved


def _first_difference(saved: Any, wanted: Any, key: str = "") -> str | None:
    """The first dotted key whose value differs between two config dicts, else None."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for name in sorted(set(saved) | set(wanted), key=str):
            found = _first_difference(saved.get(name), wanted.get(name), f"{key}.{name}" if key else str(name))
            if found is not None:
                return found
        return None
    return None if saved == wanted else key
