"""One experiment end to end: config -> data -> model -> Lightning fit/test -> one tracked MLflow run.

Everything that can be a user's mistake (config, data, Trainer arguments) is checked before the MLflow
run is opened, so a bad input leaves no run behind; once open, the run always ends with a status.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from recsys.config import ExperimentConfig
from recsys.data.datamodule import InteractionDataModule
from recsys.data.interactions import Interactions, Split
from recsys.data.loading import load_session_split, load_split
from recsys.data.splits import refit_split
from recsys.data.sessions import SessionDataModule, SessionSplit
from recsys.errors import ConfigError, DataError
from recsys.evaluation.evaluator import FullRankingEvaluator
from recsys.fit_state import FitState, ResumePoint
from recsys.losses import LOSSES
from recsys.models import MODELS, RecommenderModule, TrainingParts
from recsys.models.lr_decay import PlateauDecay, ScheduledDecay
from recsys.samplers import SAMPLERS
from recsys.samplers.diagnostics import SamplerProbe
from recsys.samplers.mnar import MNARConfig, item_propensity, known_propensity

__all__ = ["ExperimentResult", "build_model", "evaluate", "fit"]


@dataclass
class ExperimentResult:
    """What a run produced: mean metrics, per-user test metrics, and where it is tracked.

    With ``train.refit``, ``test``, ``per_user_test`` and ``checkpoint`` are the refitted model's, and
    ``selected_test`` holds the test means of the checkpoint that validation selected.
    """

    run_id: str
    test: dict[str, float]
    valid: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    epochs: int = 0
    selected_test: dict[str, float] = field(default_factory=dict)
    refit_epochs: int | None = None
    per_user_test: pl.DataFrame | None = None
    checkpoint: Path | None = None
    history: dict[int, dict[str, float]] = field(default_factory=dict)
    lr_cuts: list[int] = field(default_factory=list)  # epochs whose validation cut the learning rate


def build_model(config: ExperimentConfig, split: Split | SessionSplit) -> RecommenderModule:
    """The configured model with its sampler, loss and evaluator injected.

    For sessions, the samplers see each training session as a user of its items, and there is no
    sampler probe (its diagnostics are defined on users' held-out items).
    """
    if isinstance(split, SessionSplit):
        train, n_users, probe = split.train.interactions(), len(split.train), None
    else:
        train, n_users = split.train, split.n_users
        probe = SamplerProbe(split.train, split.valid, seed=config.seed)
    parts = TrainingParts(
        n_users=n_users,
        n_items=split.n_items,
        sampler=SAMPLERS.build(config.sampler, train, config.seed),
        loss=LOSSES.build(config.loss),
        evaluator=FullRankingEvaluator.from_config(config.eval, _inverse_propensity(config, train)),
        optimizer=config.train.optimizer,
        lr=config.train.lr,
        weight_decay=config.train.weight_decay,
        probe=probe,
        train=train,
    )
    return MODELS.build(config.model, parts)


def _inverse_propensity(config: ExperimentConfig, train: Interactions) -> torch.Tensor | None:
    """``[n_items]`` ``1 / theta`` for ``eval.ips`` (the ``mnar`` sampler's propensity model by default)."""
    if not config.eval.ips:
        return None
    sampler = config.sampler if isinstance(config.sampler, MNARConfig) else MNARConfig()
    eta = config.eval.propensity_eta if config.eval.propensity_eta is not None else sampler.eta
    clip = config.eval.propensity_clip if config.eval.propensity_clip is not None else sampler.clip
    if config.eval.propensity_file is not None:
        return torch.from_numpy(1.0 / np.clip(known_propensity(config.eval.propensity_file, train), clip, 1.0))
    return torch.from_numpy(1.0 / item_propensity(train.item_counts(), eta, clip))


def _prepare(
    config: ExperimentConfig, data_root: Path, cache_dir: Path | None, refitted: bool = False
) -> tuple[Split | SessionSplit, InteractionDataModule | SessionDataModule, RecommenderModule]:
    """The split, its data module and the model; ``refitted``: train on train + validation (a refit's
    model, whose graph or histories come from both)."""
    if config.data.sessions:
        sessions = load_session_split(config.data, data_root)
        if len(sessions.valid) == 0:  # early stopping and checkpoints need validation sessions
            raise DataError(f"data {config.data.name!r}: the split has no validation sessions "
                            "(give valid_file, or split.valid_days with split.method last_days)")
        max_len = config.model.max_len  # type: ignore[attr-defined]  (checked: a session model)
        datamodule = SessionDataModule(sessions, config.train.batch_size, config.eval.batch_size, max_len, config.seed,
                                       batches_per_call=config.train.grouping())
        return sessions, datamodule, build_model(config, sessions)
    split = load_split(config.data, data_root, config.seed, cache_dir)
    if refitted:
        split = refit_split(split)
    return split, _datamodule(config, split), build_model(config, split)


def _datamodule(config: ExperimentConfig, split: Split) -> InteractionDataModule:
    return InteractionDataModule(split, config.train.batch_size, config.eval.batch_size, config.seed,
                                 protocol=config.eval.protocol, rare_max_count=config.eval.rare_max_count,
                                 batches_per_call=config.train.grouping(),
                                 pair_sampling=config.train.pair_sampling)


def fit(
    config: ExperimentConfig,
    data_root: Path,
    tracking_uri: str,
    cache_dir: Path | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    stop_exceptions: tuple[type[BaseException], ...] = (),
    on_run: Callable[[str], None] | None = None,
    state_dir: Path | None = None,
) -> ExperimentResult:
    """Train with early stopping on ``train.monitor``, test the best checkpoint, track one run.

    With ``train.refit``, then train a fresh model (same seed) on train and validation together for the
    selected number of epochs (best epoch + 1), without validating, and test it: the papers' protocol,
    which trains on the whole train file, with the epoch count chosen on held-out data instead of on
    test. Its metrics go into the same run: ``refit/train/...`` per epoch, and ``test/...`` are the
    refitted model's; the selected checkpoint's test metrics are ``selected/test/...``. With
    ``train.refit_epochs`` there is no selection run: only the refit, for that many epochs (cutting the
    learning rate after the epochs ``train.refit_lr_cuts`` with ``train.lr_decay``).

    ``callbacks`` join the Trainer's (a search's pruning callback); ``parent_run_id`` nests the run under
    a study's run; ``tags`` are set on the run; an exception in ``stop_exceptions`` (a pruned trial)
    ends the run KILLED with a ``stopped_by`` tag instead of FAILED, and propagates. ``on_run`` is
    called with the run's id once it is open (a trial records it, so a worker that outlives a dead one
    can close its run). ``state_dir`` keeps a checkpoint of every epoch there; a fit interrupted with one
    continues from its last epoch, in its MLflow run, when called again with it (``recsys.fit_state``).
    """
    import lightning.pytorch as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    _quiet_lightning()
    refit = config.train.refit or config.train.refit_epochs is not None
    if refit and config.data.sessions:
        key = "train.refit" if config.train.refit else "train.refit_epochs"
        raise ConfigError(f"{config.source}: {key}: refitting on train + validation is for user-item "
                          "splits, not sessions")
    if config.train.pair_sampling != "interactions" and config.data.sessions:
        raise ConfigError(f"{config.source}: train.pair_sampling: {config.train.pair_sampling!r} is for "
                          "user-item splits; session batches take every session once per epoch")
    state = _fit_state(config, tracking_uri, state_dir)
    L.seed_everything(config.seed, verbose=False)
    split, datamodule, model = _prepare(config, data_root, cache_dir)

    with _scratch(state) as scratch:
        checkpoint = ModelCheckpoint(
            dirpath=scratch, monitor=config.train.monitor, mode="max", save_top_k=1, save_weights_only=True
        )
        stopping = EarlyStopping(monitor=config.train.monitor, mode="max", patience=config.train.patience)
        decay = _plateau_decay(config)
        resume = [] if state is None else [ResumePoint(state.last("select"))]
        n_batches = len(datamodule.train_dataloader())
        trainer, logger = _trainer(
            config, scratch, [checkpoint, stopping, *decay, *resume, *callbacks], progress,
            max_epochs=config.train.max_epochs, refresh_rate=max(1, n_batches // 10),
        )
        extra = dict(tags or {})
        if parent_run_id is not None:
            extra["mlflow.parentRunId"] = parent_run_id
        resumed = state.run_id if state is not None else ""
        if resumed:
            extra["resumes"] = str(state.record.get("resumes", 0) + 1)
        with _open_run(config, tracking_uri, trainer, "fit", split, extra, stop_exceptions, resumed) as run, \
                _noting_state(state):
            logger.run = run
            if state is not None:
                state.begin(run.run_id, resumed=bool(resumed))
                if resumed:
                    print(f"recsys: continuing the interrupted fit in {state.path} ({state.stage} stage, "
                          f"MLflow run {run.run_id})", file=sys.stderr)
            if on_run is not None and run.run_id:
                on_run(run.run_id)
            started = time.perf_counter()
            if config.train.refit_epochs is not None:  # the epoch count is given: no selection run
                assert isinstance(split, Split)  # sessions were refused above
                del model, datamodule
                if state is not None and state.stage == "select":
                    state.enter("refit")
                cuts = config.train.refit_lr_cuts or []
                if config.train.lr_decay is not None:
                    run.set_tags({"lr_cuts": ",".join(map(str, cuts))})
                result = _refit(config, split, config.train.refit_epochs, run, Path(scratch), progress,
                                refresh_rate=max(1, n_batches // 10), state=state, lr_cuts=cuts)
                result.lr_cuts = list(cuts)
                run.log_metrics({"refit/time/total_s": time.perf_counter() - started}, step=config.train.refit_epochs)
                _log_per_user(run, result)
                if config.tracking.log_checkpoint:
                    result.checkpoint = _log_checkpoint(run, str(Path(scratch) / "refit.ckpt"), "refit.ckpt")
                if state is not None:
                    state.finish()
                return result
            if state is not None and state.stage == "refit":  # resumed after its selection run finished
                result = _selected(state.record["selection"], run.run_id)
            else:
                result = _select(config, trainer, model, datamodule, checkpoint, logger, split, run, started,
                                 state, decay)
            best = checkpoint.best_model_path or None
            if config.train.refit:
                assert isinstance(split, Split)  # sessions were refused above
                epochs = result.epochs if result.best_epoch is None else result.best_epoch + 1
                if state is None or state.stage == "select":  # not yet done by an interrupted attempt
                    if config.tracking.log_checkpoint:
                        _log_checkpoint(run, best, "best.ckpt")
                    if state is not None:
                        state.enter("refit", selection=_selection_record(result))
                refitted = _refit(config, split, epochs, run, Path(scratch), progress, refresh_rate=max(1, n_batches // 10),
                                  state=state, lr_cuts=result.lr_cuts)
                refitted.valid, refitted.best_epoch, refitted.epochs = result.valid, result.best_epoch, result.epochs
                refitted.selected_test, refitted.lr_cuts = result.test, result.lr_cuts
                result = refitted
                run.log_metrics({"refit/time/total_s": time.perf_counter() - started}, step=epochs)
            _log_per_user(run, result)
            if config.tracking.log_checkpoint:
                saved = _log_checkpoint(run, str(Path(scratch) / "refit.ckpt") if config.train.refit else best,
                                        "refit.ckpt" if config.train.refit else "best.ckpt")
                result.checkpoint = saved if saved is not None else result.checkpoint
            if state is not None:
                state.finish()
    return result


def _plateau_decay(config: ExperimentConfig) -> list[PlateauDecay]:
    """The selection run's learning-rate cuts on a plateau (``train.lr_decay``), if any."""
    if config.train.lr_decay is None:
        return []
    return [PlateauDecay(config.train.monitor, config.train.lr_decay, config.train.lr_patience, config.train.min_lr)]


def _select(config: ExperimentConfig, trainer, model: RecommenderModule, datamodule, checkpoint, logger,
            split: Split | SessionSplit, run, started: float, state: FitState | None,
            decay: list[PlateauDecay]) -> ExperimentResult:
    """The selection run: train with validation and early stopping (from the state's last epoch, if
    an interrupted fit left one), then test the best checkpoint."""
    trainer.fit(model, datamodule=datamodule, ckpt_path=state.resumable("select") if state is not None else None)
    best = checkpoint.best_model_path or None
    # Lightning saves a checkpoint only after an optimizer step; a closed-form model takes none
    # and is tested as fitted.
    if best is None and trainer.global_step > 0:
        warnings.warn(f"{config.train.monitor} was never finite: testing the last weights", stacklevel=1)
    if config.train.refit:
        logger.prefix = "selected/"
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    run.log_metrics({"time/total_s": time.perf_counter() - started}, step=trainer.current_epoch)
    result = _result(run.run_id, model, logger.history, split, "test")
    result.best_epoch = _best_epoch(logger.history, config.train.monitor)
    result.valid = _stage_means(logger.history.get(result.best_epoch, {}), "val")
    result.epochs = trainer.current_epoch
    run.set_tags({"best_epoch": str(result.best_epoch), "epochs": str(result.epochs)})
    if decay:
        result.lr_cuts = list(decay[0].cuts)
        run.set_tags({"lr_cuts": ",".join(map(str, result.lr_cuts))})
    return result


def _selection_record(result: ExperimentResult) -> dict[str, Any]:
    """What a refit needs of its selection run, kept in the fit's state while the refit trains."""
    return {"test": result.test, "valid": result.valid, "best_epoch": result.best_epoch, "epochs": result.epochs,
            "lr_cuts": result.lr_cuts}


def _selected(record: dict[str, Any], run_id: str) -> ExperimentResult:
    return ExperimentResult(run_id=run_id, test=record["test"], valid=record["valid"],
                            best_epoch=record["best_epoch"], epochs=record["epochs"],
                            lr_cuts=record.get("lr_cuts", []))


def _fit_state(config: ExperimentConfig, tracking_uri: str, state_dir: Path | None) -> FitState | None:
    if state_dir is None:
        return None
    if str(config.train.trainer_arguments().get("strategy", "auto")).startswith("ddp"):
        raise ConfigError(f"{config.source}: train.strategy: --state-dir resumes single-process fits, not DDP")
    return FitState.open(state_dir, config, tracking_uri)


@contextmanager
def _scratch(state: FitState | None) -> Iterator[str]:
    """The fit's working folder: the state folder of a resumable fit, else a temporary one."""
    if state is not None:
        state.path.mkdir(parents=True, exist_ok=True)
        yield str(state.path)
        return
    with tempfile.TemporaryDirectory(prefix="recsys-fit-") as scratch:
        yield scratch


@contextmanager
def _noting_state(state: FitState | None) -> Iterator[None]:
    """On an interrupted or failed resumable fit, say how to continue it."""
    try:
        yield
    except BaseException:
        if state is not None and state.stage != "finished" and state.last(state.stage).is_file():
            print(f"recsys: the fit's state is in {state.path}: the same command with --state-dir "
                  f"{state.path} continues it", file=sys.stderr)
        raise


def _refit(config: ExperimentConfig, split: Split, epochs: int, run, scratch: Path, progress: bool,
           refresh_rate: int, state: FitState | None = None, lr_cuts: Sequence[int] = ()) -> ExperimentResult:
    """Train a fresh model on train + validation for ``epochs`` epochs, test it, log into ``run``.

    The same seed as the selection run, so the refit starts from the same initial weights; with
    ``train.lr_decay`` it cuts the learning rate after the epochs ``lr_cuts`` whose validation cut it
    in the selection run. With ``train.refit_test_every``, it tests every that many epochs too
    (``refit/test/...`` by epoch), a curve that chooses nothing. It saves its last weights to
    ``scratch/refit.ckpt`` (a ``recsys evaluate`` checkpoint of this config). With a ``state``, it
    checkpoints every epoch there and continues from the last one an interrupted refit left.
    """
    import lightning.pytorch as L

    L.seed_everything(config.seed, verbose=False)
    merged = refit_split(split)
    model, datamodule = build_model(config, merged), _datamodule(config, merged)
    every = config.train.refit_test_every
    validation: dict[str, Any] = dict(limit_val_batches=0)
    if every is not None:  # the test curve: "validation" ranks the test set every `every` epochs
        datamodule.validate_on_test, model.validation_stage = True, "test"
        if model.probe is not None:  # its false negatives: held-out positives, now the test's
            model.probe = SamplerProbe(merged.train, merged.test, seed=config.seed)
        validation = dict(check_val_every_n_epoch=every, limit_val_batches=None)
    resume = [] if state is None else [ResumePoint(state.last("refit"))]
    if config.train.lr_decay is not None:
        resume.insert(0, ScheduledDecay(list(lr_cuts), config.train.lr_decay, config.train.min_lr))
    trainer, logger = _trainer(config, str(scratch / "refit"), resume, progress, max_epochs=epochs,
                               refresh_rate=refresh_rate, enable_checkpointing=False, **validation)
    logger.run, logger.prefix = run, "refit/"
    run.set_tags({"refit_epochs_planned": str(epochs), "data.refit_train_interactions": str(len(merged.train))})
    trainer.fit(model, datamodule=datamodule, ckpt_path=state.resumable("refit") if state is not None else None)
    run.set_tags({"refit_epochs": str(trainer.current_epoch)})
    logger.prefix = ""
    trainer.test(model, datamodule=datamodule, verbose=False)
    _save_refitted(trainer, scratch / "refit.ckpt")
    result = _result(run.run_id, model, logger.history, merged, "test")
    result.refit_epochs = result.epochs = trainer.current_epoch
    if trainer.current_epoch < epochs and trainer.global_rank == 0:  # max_time ended the refit early
        print(f"recsys: note: the refit trained {trainer.current_epoch} of {epochs} epochs (train.max_time)",
              file=sys.stderr)
    return result


def evaluate(
    config: ExperimentConfig,
    checkpoint: Path,
    data_root: Path,
    tracking_uri: str,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Test a saved checkpoint of ``config``'s model on its test split; track one run.

    A refit's checkpoint (marked by ``fit``) rebuilds the model's data-derived parts (LightGCN's graph,
    SimpleX's histories) from train + validation, as it was trained.
    """
    _quiet_lightning()
    if not checkpoint.is_file():
        raise DataError(f"{checkpoint}: no such checkpoint")
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state, refitted = saved["state_dict"], saved.get(_TRAINED_ON, "train") == "train+valid"
    except (RuntimeError, KeyError, OSError, EOFError, TypeError, AttributeError) as error:
        raise DataError(f"{checkpoint}: not a torch checkpoint ({type(error).__name__}: {_reason(error)})") from None
    split, datamodule, model = _prepare(config, data_root, cache_dir, refitted)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as error:
        raise DataError(f"{checkpoint}: not a checkpoint of this config's model ({_reason(error)})") from None
    with tempfile.TemporaryDirectory(prefix="recsys-evaluate-") as scratch:
        trainer, logger = _trainer(config, scratch, [], progress, max_epochs=1, refresh_rate=1)
        with _open_run(config, tracking_uri, trainer, "evaluate", split) as run:
            logger.run = run
            run.set_tags({"checkpoint": str(checkpoint.resolve())})
            trainer.test(model, datamodule=datamodule, verbose=False)
            result = _result(run.run_id, model, logger.history, split, "test")
            _log_per_user(run, result)
    return result


def _reason(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _trainer(config: ExperimentConfig, scratch: str, callbacks: list, progress: bool, max_epochs: int, refresh_rate: int,
             **forced: Any):
    """A Trainer with the config's arguments; ``forced`` arguments (a refit's) override them."""
    import lightning.pytorch as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from recsys.tracking.logger import EpochLogger
    from recsys.tracking.progress import ProgressBar

    logger = EpochLogger()
    arguments = dict(
        max_epochs=max_epochs,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=progress,
        default_root_dir=scratch,
    )
    arguments.update(config.train.trainer_arguments())
    arguments.update(forced)
    bar = [ProgressBar(refresh_rate=refresh_rate)] if arguments["enable_progress_bar"] else []
    try:
        trainer = L.Trainer(logger=logger, callbacks=[*callbacks, *bar], **arguments)
    except (MisconfigurationException, ValueError, TypeError) as error:
        raise ConfigError(f"{config.source}: train: {str(error).strip().splitlines()[0]}") from None
    return trainer, logger


def split_statistics(split: Split | SessionSplit) -> dict[str, int]:
    """Sizes a reader of a run needs to interpret it: id spaces, interactions and users per part
    (sessions and events per part for sessions)."""
    if isinstance(split, SessionSplit):
        statistics = {"n_items": split.n_items}
        for name, sessions in split.parts().items():
            statistics[f"{name}_sessions"] = len(sessions)
            statistics[f"{name}_events"] = sessions.n_events
        return statistics
    statistics = {"n_users": split.n_users, "n_items": split.n_items}
    for name, part in split.parts().items():
        statistics[f"{name}_interactions"] = len(part)
        statistics[f"{name}_users"] = int(np.count_nonzero(part.user_counts()))
    return statistics


def _open_run(config: ExperimentConfig, tracking_uri: str, trainer, command: str, split: Split | SessionSplit,
              extra_tags: dict[str, str] | None = None, stop_exceptions: tuple[type[BaseException], ...] = (),
              resume_run_id: str = ""):
    from recsys.tracking.environment import environment_tags
    from recsys.tracking.run import TrackedRun, UntrackedRun

    if trainer.global_rank != 0:  # DDP: one run, tracked by rank zero
        return _Started(UntrackedRun(), config)  # type: ignore[arg-type]
    device = trainer.strategy.root_device
    tags = {
        **environment_tags(),
        "seed": str(config.seed),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "command": command,
        "dataset": config.data.name,
    }
    tags.update({f"data.{name}": str(value) for name, value in split_statistics(split).items()})
    tags.update(extra_tags or {})
    run = TrackedRun(tracking_uri, config.tracking.experiment, config.run_name(), tags, stop_exceptions,
                     resume_run_id=resume_run_id)
    return _Started(run, config, log_config=not resume_run_id)


class _Started:
    """Enter the run, then log the config as params and artifact (inside the run's status handling;
    not again for a resumed run, which has them)."""

    def __init__(self, run, config: ExperimentConfig, log_config: bool = True) -> None:
        self.run, self.config, self.log_config = run, config, log_config

    def __enter__(self):
        self.run.__enter__()
        if not self.log_config:
            return self.run
        try:
            self.run.log_params(self.config.flat())
            self.run.log_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False), "config.yaml")
        except BaseException as error:
            self.run.__exit__(type(error), error, error.__traceback__)
            raise
        return self.run

    def __exit__(self, *exc_info) -> None:
        self.run.__exit__(*exc_info)


def _result(run_id: str, model: RecommenderModule, history, split: Split | SessionSplit, stage: str) -> ExperimentResult:
    per_query = model.per_query.get(stage, {})
    per_user = None
    if per_query:
        queries = per_query["queries"].numpy()
        # Sessions: one query per predicted event, numbered in the test sessions' stored order.
        key = ("prediction", queries) if isinstance(split, SessionSplit) else ("user", split.train.user_ids.gather(queries))
        per_user = pl.DataFrame(
            {
                key[0]: key[1],
                **{name: values.numpy() for name, values in per_query.items() if name != "queries"},
            }
        )
    means = {name: float(values.mean()) for name, values in per_query.items() if name != "queries"}
    for other, values_by_name in model.per_query.items():  # further passes, e.g. test/rare
        if other.startswith(f"{stage}/"):
            prefix = other.removeprefix(f"{stage}/")
            means |= {f"{prefix}/{name}": float(v.mean()) for name, v in values_by_name.items() if name != "queries"}
    return ExperimentResult(run_id=run_id, test=means, per_user_test=per_user, history=history)


# The checkpoint key that says what a model was trained on: "train+valid" for a refit (else absent).
_TRAINED_ON = "recsys_trained_on"


def _save_refitted(trainer, path: Path) -> None:
    """Save the weights, marked as trained on train + validation, which `evaluate` reads back."""
    trainer.save_checkpoint(path, weights_only=True)
    if trainer.global_rank == 0:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        saved[_TRAINED_ON] = "train+valid"
        torch.save(saved, path)


def _log_per_user(run, result: ExperimentResult) -> None:
    if result.per_user_test is None:
        return
    with tempfile.TemporaryDirectory(prefix="recsys-artifacts-") as folder:
        path = Path(folder) / "test.parquet"
        result.per_user_test.write_parquet(path)
        run.log_artifact(path, "per_user")


def _log_checkpoint(run, checkpoint: str | None, name: str) -> Path | None:
    """Move ``checkpoint`` into the run's ``checkpoints/`` as ``name``; its stored path (None if none)."""
    if not checkpoint or not Path(checkpoint).is_file() or not run.run_id:
        return None
    with tempfile.TemporaryDirectory(prefix="recsys-artifacts-") as folder:
        path = Path(folder) / name
        shutil.move(checkpoint, path)
        run.log_artifact(path, "checkpoints")
    return Path(_local_artifact(run.artifact_uri)) / "checkpoints" / name


def _local_artifact(uri: str) -> str:
    return uri.removeprefix("file://")


def _best_epoch(history: dict[int, dict[str, float]], monitor: str) -> int | None:
    scored = [(values[monitor], epoch) for epoch, values in history.items() if monitor in values]
    scored = [(value, epoch) for value, epoch in scored if np.isfinite(value)]
    # Earliest epoch among equals: what ModelCheckpoint keeps (it saves only on strict improvement).
    return max(scored, key=lambda pair: (pair[0], -pair[1]))[1] if scored else None


def _stage_means(metrics: dict[str, float], stage: str) -> dict[str, float]:
    prefix = f"{stage}/"
    return {name.removeprefix(prefix): value for name, value in metrics.items() if name.startswith(prefix)}


def _quiet_lightning() -> None:
    """Drop Lightning's and MLflow's start-up chatter; recsys prints what matters."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # We log per epoch only, so Lightning's hint about log_every_n_steps does not apply.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # The best checkpoint goes in the fit's own folder, which a resumable fit (--state-dir) shares.
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    # Under DDP every process computes the same full-ranking metrics, so they need no sync_dist.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    # RecommenderModule overrides transfer_batch_to_device on purpose (a fast path for its batches).
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
    # A closed-form model (weighted_svd) fits its factors itself and has nothing to optimise.
    warnings.filterwarnings("ignore", message=".*configure_optimizers` returned `None`.*")
