"""`recsys tune`: an Optuna study over a config, each trial one nested MLflow run of `recsys fit`.

The study lives in an Optuna RDB storage (SQLite locally, PostgreSQL for workers on many machines), so
any number of `recsys tune` processes on the same ``--storage`` and ``--study`` share it, and running the
command again resumes it. The budget is ``--trials`` finished (complete or pruned) trials: a worker
starts a trial only while finished + running + waiting trials are fewer. Running trials send heartbeats;
a trial whose worker died (SIGKILL, a lost machine) is marked failed after the grace period and retried
as a new trial by any worker (Optuna's ``RetryHeartbeatStaleTrialCallback``).
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from recsys.config import load_config
from recsys.errors import ConfigError
from recsys.interrupts import Deferring, deferred_interrupts, interruptible
from recsys.tracking.run import tracking_client
from recsys.tuning.space import SearchSpace, load_space, overrides

__all__ = ["TuneResult", "tune", "worker_command"]

# Heartbeats: a running trial reports every 10 s; one silent for 60 s belongs to a dead worker.
# RECSYS_TUNE_HEARTBEAT_S and RECSYS_TUNE_GRACE_S (whole seconds, read at import, so in each worker process)
# override them: the tests set them low to see a killed worker's trial failed and retried in seconds.
HEARTBEAT_INTERVAL_S = int(os.environ.get("RECSYS_TUNE_HEARTBEAT_S", "10"))
GRACE_PERIOD_S = int(os.environ.get("RECSYS_TUNE_GRACE_S", "60"))
_PARENT_RUN = "mlflow_parent_run_id"


@dataclass
class TuneResult:
    """What a study reached: its best trial, exported config and parent MLflow run."""

    study: str
    finished: int
    pruned: int
    best_value: float | None
    best_params: dict[str, Any]
    best_config: Path | None
    parent_run_id: str


def tune(
    config_path: Path,
    base_overrides: Sequence[str],
    space_path: Path,
    n_trials: int,
    *,
    storage: str,
    study_name: str,
    data_root: Path,
    tracking_uri: str,
    cache_dir: Path | None = None,
    timeout: float | None = None,
    workers: int = 1,
    seed_offset: int = 0,
    out: Path | None = None,
    summary: bool = True,
    resume: bool = False,
    pruner: str | None = None,
    search_sampler: str | None = None,
) -> TuneResult:
    """Run (or resume) the study until it has ``n_trials`` finished trials or ``timeout`` seconds pass.

    With ``workers > 1`` this process starts that many worker processes on the same study and waits
    for them; then (and in a single worker) it exports the best config and logs the study's plots to
    the parent run (``summary``). ``resume`` requires the study to exist already.
    """
    import optuna

    space = load_space(space_path)
    if pruner is not None or search_sampler is not None:
        try:
            space = SearchSpace.model_validate({**space.model_dump(), "pruner": pruner or space.pruner,
                                                "sampler": search_sampler or space.sampler})
        except ValueError as error:  # e.g. grid with a float parameter
            raise ConfigError(f"{space_path}: {str(error).splitlines()[-1].strip()}") from None
    config = load_config(config_path, base_overrides)  # a bad config fails here, before any trial
    if config.train.refit or config.train.refit_epochs is not None:
        key = "train.refit" if config.train.refit else "train.refit_epochs"
        raise ConfigError(f"{config_path}: {key}: a search ranks trials on validation, which a refit does not "
                          "change; refit the best config with `recsys fit ... train.refit=true`")
    if resume and study_name not in _study_names(storage):
        raise ConfigError(f"--resume: no study {study_name!r} in {storage}")
    study = _study(storage, study_name, space, config.seed, seed_offset)
    parent = _parent_run(study, tracking_uri, config.tracking.experiment, study_name, space, n_trials)
    if workers > 1:
        _run_workers(workers, config_path, base_overrides, n_trials, storage, study_name, data_root,
                     tracking_uri, cache_dir, timeout, space_path, pruner, search_sampler)
    else:
        deadline = None if timeout is None else time.monotonic() + timeout
        objective = _Objective(config_path, list(base_overrides), space, data_root, tracking_uri, cache_dir,
                               parent, n_trials)
        try:
            # Ctrl-C acts at once only while a trial trains or the loop waits: in Optuna's and MLflow's
            # bookkeeping it is held until the write is done (a trial left RUNNING, or a store left
            # locked, is what an interrupt there would cost).
            with deferred_interrupts():
                while deadline is None or time.monotonic() < deadline:
                    step = _next_step(study, n_trials, tracking_uri)
                    if step == "done":
                        break
                    if step == "wait":  # the budget is held by other workers' running trials: they may die
                        with interruptible():
                            time.sleep(HEARTBEAT_INTERVAL_S)
                        continue
                    # One trial per call: Optuna's optimize() sends heartbeats and runs a WAITING retry first.
                    study.optimize(objective, n_trials=1, catch=(_Surplus,), gc_after_trial=False)
        except KeyboardInterrupt:
            if summary:  # the study's run says it stopped; a resumed study finishes it
                tracking_client(tracking_uri).set_terminated(parent, "KILLED")
            raise
    parent = reconcile_parent_runs(study, tracking_uri, config.tracking.experiment, study_name) or parent
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    best_config = None
    if summary:
        if finished:
            best_config = _export_best(study, out or Path("tracking") / "studies" / f"{study_name}-best.yaml")
        _summarise(study, tracking_uri, parent, best_config)
    return TuneResult(
        study=study_name,
        finished=len(finished),
        pruned=len(pruned),
        best_value=study.best_value if finished else None,
        best_params=study.best_params if finished else {},
        best_config=best_config,
        parent_run_id=parent,
    )


class _Objective:
    """One trial: the space's values as overrides, one `recsys fit` nested under the study's run, with
    Optuna's Lightning pruning callback on ``train.monitor``. Returns the best validation value."""

    def __init__(self, config_path: Path, base_overrides: list[str], space: SearchSpace, data_root: Path,
                 tracking_uri: str, cache_dir: Path | None, parent: str, n_trials: int) -> None:
        self.config_path, self.base_overrides, self.space = config_path, base_overrides, space
        self.data_root, self.tracking_uri, self.cache_dir, self.parent = data_root, tracking_uri, cache_dir, parent
        self.n_trials = n_trials

    def __call__(self, trial: Any) -> float:
        import optuna
        from recsys.experiment import fit

        # Two workers that both saw one trial left may both have started one: the later is surplus.
        ahead = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number
                 and t.state.name in ("COMPLETE", "PRUNED", "RUNNING")]
        if len(ahead) >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number} is beyond the budget of {self.n_trials}")
        chosen = overrides(self.space.suggest(trial))
        config = load_config(self.config_path, [*self.base_overrides, *chosen])
        trial.set_user_attr("overrides", chosen)
        trial.set_user_attr("config", config.to_dict())
        callbacks = [] if self.space.pruner == "none" else [_pruning_callback(trial, config.train.monitor)]
        tags = {"optuna.study": trial.study.study_name, "optuna.trial": str(trial.number)}
        try:
            with interruptible():
                result = fit(config, self.data_root, self.tracking_uri, self.cache_dir, progress=False,
                             callbacks=callbacks, parent_run_id=self.parent, tags=tags,
                             stop_exceptions=(optuna.TrialPruned,),
                             on_run=lambda run_id: Deferring(trial).set_user_attr("mlflow_run_id", run_id))
        except SystemExit as interrupted:
            # Lightning turns Ctrl-C into SystemExit(1); Optuna marks a trial FAIL only on an exception
            # or KeyboardInterrupt (a SystemExit would leave it RUNNING until its heartbeat goes stale).
            raise KeyboardInterrupt from interrupted
        value = result.valid.get(config.train.monitor.removeprefix("val/"))
        if value is None:
            raise RuntimeError(f"{config.train.monitor} was never computed")
        return value


def _pruning_callback(trial: Any, monitor: str) -> Any:
    """Optuna's Lightning pruning callback, its reports to the study's storage each run whole under Ctrl-C."""
    from optuna_integration import PyTorchLightningPruningCallback

    class _Pruning(PyTorchLightningPruningCallback):
        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            with deferred_interrupts():
                super().on_fit_start(trainer, pl_module)

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            with deferred_interrupts():
                super().on_validation_end(trainer, pl_module)

    return _Pruning(trial, monitor)


def _study(storage_url: str, name: str, space: SearchSpace, seed: int, seed_offset: int):
    """The study, created or loaded; its search sampler seeded by the space's seed (else the experiment's)
    plus the worker's offset, plus a step per trial already in a resumed study."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _local_folder(storage_url)
    engine = {"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats and their retry callback are "experimental"
                warnings.simplefilter("ignore")
                storage = RDBStorage(
                    storage_url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
            break
        except Exception as error:  # a wrong URL, an unreachable server, a missing driver
            # Workers creating a fresh database's tables at the same moment collide (optuna#1092):
            # the tables exist when the loser tries again.
            if attempt < 4 and _creation_race(error):
                time.sleep(0.5 + random.random())
                continue
            raise ConfigError(f"--storage {storage_url}: {str(error).strip().splitlines()[0]}") from None

    seed = (space.seed if space.seed is not None else seed) + seed_offset
    names = [summary.study_name for summary in optuna.study.get_all_study_summaries(storage)]
    if name in names:  # resumed: a sampler seeded as before would propose the first trials' values again
        seed += 7919 * len(optuna.load_study(study_name=name, storage=storage).trials)
    if space.sampler == "grid":
        sampler = optuna.samplers.GridSampler(space.grid(), seed=seed)
    elif space.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=_pruner(space),
                               direction="maximize", load_if_exists=True)


def _creation_race(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}"
    return any(word in text for word in ("IntegrityError", "UniqueViolation", "already exists", "ProgrammingError"))


def _pruner(space: SearchSpace):
    """The median rule (after 5 trials, from epoch 5) or Hyperband on the validation curve."""
    import optuna

    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _study_names(storage_url: str) -> list[str]:
    import optuna

    try:
        return [summary.study_name for summary in optuna.study.get_all_study_summaries(storage_url)]
    except Exception as error:
        raise ConfigError(f"--storage {storage_url}: {str(error).strip().splitlines()[0]}") from None


def _local_folder(storage_url: str) -> None:
    prefix = "sqlite:///"
    if storage_url.startswith(prefix):
        Path(storage_url[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)


class _Surplus(Exception):
    """A trial started by two workers at once beyond the budget: it ends FAIL before any work."""


def _counts(study) -> Counter:
    return Counter(trial.state.name for trial in study.get_trials(deepcopy=False))


def _next_step(study, n_trials: int, tracking_uri: str) -> str:
    """``run`` a trial, ``wait`` for other workers' running trials, or ``done``.

    Stale trials (a worker died: no heartbeat for the grace period) are failed first; Optuna's retry
    callback then enqueues a copy, which the next trial started here runs.
    """
    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():  # "experimental" in Optuna
        warnings.simplefilter("ignore")
        fail_stale_trials(study)
    _close_runs_of_failed_trials(study, tracking_uri)
    counts = _counts(study)
    finished = counts["COMPLETE"] + counts["PRUNED"]
    if finished >= n_trials:
        return "done"
    if finished + counts["RUNNING"] < n_trials:
        return "run"
    return "wait"


def _close_runs_of_failed_trials(study, tracking_uri: str) -> None:
    """End the MLflow runs of trials whose worker died (left RUNNING by it) as KILLED."""
    import optuna

    client = None
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        client = client or tracking_client(tracking_uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "stopped_by", "worker lost: no heartbeat for the grace period")
            client.set_terminated(run_id, "KILLED")


def _parent_run(study, tracking_uri: str, experiment: str, name: str, space: SearchSpace, n_trials: int) -> str:
    """The study's MLflow run, created by its first worker and kept in the study's user attributes."""
    from recsys.tracking.run import TrackedRun

    existing = study.user_attrs.get(_PARENT_RUN)
    if existing:
        return existing
    run = TrackedRun(tracking_uri, experiment, f"study-{name}", {"optuna.study": name, "command": "tune"})
    run.__enter__()
    run.log_params({"study": name, "trials": n_trials, "search_sampler": space.sampler, "pruner": space.pruner})
    run.log_text(yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False), "search_space.yaml")
    study.set_user_attr(_PARENT_RUN, run.run_id)
    # Workers started together may each have created one: after a pause every one of them reads the
    # last id written, and the others delete their own.
    time.sleep(2.0)
    kept = study.user_attrs.get(_PARENT_RUN) or run.run_id  # read from the storage, not cached
    if kept != run.run_id:
        run.client.delete_run(run.run_id)
    return kept


def reconcile_parent_runs(study, tracking_uri: str, experiment: str, name: str) -> str | None:
    """Leave the study one MLflow run, whatever the timing of its workers' starts, and return it.

    Workers started together may each create a study run before any of them sees another's (the pause
    in ``_parent_run`` makes that rare, not impossible: a loaded machine outran it). Each worker calls
    this when its loop ends: the oldest study run (start time, then id) is kept, every trial's run that
    hangs under another is moved under it, and the others are deleted. The choice depends only on what
    is stored, so workers reconciling at once agree, and the last one to end sees every study run.
    """
    client = tracking_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    # A name with a quote cannot go into MLflow's filter: then every run of the experiment is read.
    runs = client.search_runs([found.experiment_id], max_results=50000,
                              filter_string="" if "'" in name else f"tags.`optuna.study` = '{name}'")
    runs = [run for run in runs if run.data.tags.get("optuna.study") == name]
    parents = [run for run in runs if run.data.tags.get("command") == "tune"]
    if not parents:
        return None
    kept = min(parents, key=lambda run: (run.info.start_time, run.info.run_id)).info.run_id
    others = {run.info.run_id for run in parents} - {kept}
    for run in runs:
        if run.data.tags.get("mlflow.parentRunId") in others:
            client.set_tag(run.info.run_id, "mlflow.parentRunId", kept)
    for run_id in others:
        client.delete_run(run_id)
    if study.user_attrs.get(_PARENT_RUN) != kept:
        Deferring(study).set_user_attr(_PARENT_RUN, kept)
    return kept


def worker_command(config_path: Path, base_overrides: Sequence[str], n_trials: int, storage: str, study_name: str,
                   data_root: Path, tracking_uri: str, cache_dir: Path | None, timeout: float | None,
                   seed_offset: int, space_path: Path, pruner: str | None = None,
                   search_sampler: str | None = None) -> list[str]:
    """The `recsys tune` command line of one worker process on the study."""
    command = [sys.executable, "-m", "recsys.cli", "tune", "-c", str(config_path), "--space", str(space_path),
               "--trials", str(n_trials), "--storage", storage, "--study", study_name, "--data-root", str(data_root),
               "--tracking-uri", tracking_uri, "--seed-offset", str(seed_offset), "--no-summary"]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    if pruner is not None:
        command += ["--pruner", pruner]
    if search_sampler is not None:
        command += ["--search-sampler", search_sampler]
    return [*command, *base_overrides]


def _run_workers(workers: int, config_path: Path, base_overrides: Sequence[str], n_trials: int, storage: str,
                 study_name: str, data_root: Path, tracking_uri: str, cache_dir: Path | None,
                 timeout: float | None, space_path: Path, pruner: str | None, search_sampler: str | None) -> None:
    processes = [
        subprocess.Popen(worker_command(config_path, base_overrides, n_trials, storage, study_name, data_root,
                                        tracking_uri, cache_dir, timeout, index, space_path, pruner,
                                        search_sampler))
        for index in range(workers)
    ]
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        raise
    if any(codes):
        raise RuntimeError(f"worker exit codes {codes}")


def _export_best(study, path: Path) -> Path:
    """Write the best trial's resolved config as a YAML that `recsys fit -c` takes as it is."""
    best = study.best_trial
    config = dict(best.user_attrs["config"])
    config["tracking"] = {**config.get("tracking", {}), "run_name": f"{study.study_name}-best-trial-{best.number}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Best trial {best.number} of study {study.study_name!r}: {best.value:.6f} "
              f"({best.user_attrs.get('mlflow_run_id', '?')}).\n# Overrides: {' '.join(best.user_attrs['overrides'])}\n")
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(header + yaml.safe_dump(config, sort_keys=False))
    os.replace(handle.name, path)  # never a half-written config
    return path


def _summarise(study, tracking_uri: str, parent: str, best_config: Path | None) -> None:
    """Log the study's plots, best trial and trial table to its run, and close the run."""
    import optuna

    client = tracking_client(tracking_uri)
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if finished:
        client.log_metric(parent, "best_value", study.best_value)
        client.set_tag(parent, "best_trial", str(study.best_trial.number))
    if best_config is not None:
        client.log_artifact(parent, str(best_config))
    with tempfile.TemporaryDirectory(prefix="recsys-study-") as folder:
        table = Path(folder) / "trials.csv"
        study.trials_dataframe().to_csv(table, index=False)
        client.log_artifact(parent, str(table))
        for plot in _plots(study, Path(folder)):
            client.log_artifact(parent, str(plot), "plots")
    client.set_terminated(parent, "FINISHED")


def _plots(study, folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and parallel coordinates as PNGs (those that the
    study has enough trials for)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    logging.getLogger("optuna").setLevel(logging.ERROR)
    made = []
    for name, draw in (("optimization_history", plots.plot_optimization_history),
                       ("param_importances", plots.plot_param_importances),
                       ("parallel_coordinate", plots.plot_parallel_coordinate)):
        try:
            with warnings.catch_warnings():  # experimental-API and few-trials notes
                warnings.simplefilter("ignore")
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few finished trials for this plot
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        made.append(path)
    return made
