"""One MLflow run, opened on an explicit tracking URI and always closed with a final status.

A run that raises ends FAILED; one interrupted (Ctrl-C, SIGTERM, Lightning's exit after an interrupt)
ends KILLED; never RUNNING. Every call to the store runs whole: an interrupt arriving during one is raised
after it (recsys.interrupts), so that no half-done write keeps the SQLite lock from the final status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from recsys.interrupts import Deferring, deferred_interrupts

__all__ = ["TrackedRun", "UntrackedRun", "local_store_path", "mlflow_key", "tracking_client"]

_PARAM_BATCH = 100
_MAX_PARAM_LENGTH = 6000


def local_store_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else None."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def tracking_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri`` whose every call runs whole, even under Ctrl-C (its
    construction too: it may create a new store's tables)."""
    from mlflow.tracking import MlflowClient

    with deferred_interrupts():
        return Deferring(MlflowClient(tracking_uri))


class TrackedRun:
    """A context manager around one MLflow run.

    Args:
        tracking_uri: any MLflow tracking URI; for ``sqlite:///path/mlflow.db`` the folder is created and
            artifacts go to ``path/artifacts/``.
        experiment: experiment name (created if missing).
        run_name: readable run name.
        tags: tags set at creation.
        stop_exceptions: exceptions that stop a run on purpose (an Optuna trial pruned): the run ends
            KILLED with a ``stopped_by`` tag naming the exception, not FAILED.
        resume_run_id: continue this existing run (an interrupted fit resumed): it is set RUNNING again
            and gets ``tags``, instead of a new run being created.
    """

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str] | None = None,
                 stop_exceptions: tuple[type[BaseException], ...] = (), resume_run_id: str = ""):
        self.tracking_uri = tracking_uri
        store = local_store_path(tracking_uri)
        if store is None:
            self.client = tracking_client(tracking_uri)
            self.experiment_id = self._experiment(experiment, store)
        else:
            store.parent.mkdir(parents=True, exist_ok=True)
            # Processes opening a new SQLite store at once would each create its tables (and collide):
            # the first to hold the lock creates them (MlflowClient does, as it is built).
            with _locked(store.parent / f".{store.name}.lock"):
                self.client = tracking_client(tracking_uri)
                self.experiment_id = self._experiment(experiment, store)
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.stop_exceptions = stop_exceptions
        self.resume_run_id = resume_run_id
        self.run_id = ""

    def _experiment(self, name: str, store: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = str((store.parent / "artifacts").resolve()) if store is not None else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by another worker
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def __enter__(self) -> TrackedRun:
        if self.resume_run_id:
            with deferred_interrupts():
                self.client.update_run(self.resume_run_id, status="RUNNING")
                self.run_id = self.resume_run_id
            try:
                self.set_tags(self.tags)
            except BaseException as error:
                self.__exit__(type(error), error, error.__traceback__)
                raise
            return self
        try:
            with deferred_interrupts():
                self.run_id = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=self.tags).info.run_id
        except KeyboardInterrupt:  # arrived while the run was created: no __exit__ will close it
            if self.run_id:
                self.client.set_terminated(self.run_id, status="KILLED")
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None or (issubclass(kind, SystemExit) and not error.code):  # type: ignore[union-attr]
            status = "FINISHED"
        elif issubclass(kind, (KeyboardInterrupt, SystemExit)):
            status = "KILLED"
        elif self.stop_exceptions and issubclass(kind, self.stop_exceptions):
            status = "KILLED"
            self.client.set_tag(self.run_id, "stopped_by", f"{kind.__name__}: {error}"[:5000])
        else:
            status = "FAILED"
            self.client.set_tag(self.run_id, "error", f"{kind.__name__}: {error}"[:5000])
        self.client.set_terminated(self.run_id, status=status)

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, _param_text(value)) for key, value in params.items()]
        for start in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _PARAM_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(mlflow_key(key), float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(entries), _PARAM_BATCH):
            self.client.log_batch(self.run_id, metrics=entries[start : start + _PARAM_BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)


class UntrackedRun:
    """The run of a DDP process other than global rank zero: rank zero tracks the run, the others
    compute the same metrics and log nothing (``run_id`` is empty)."""

    run_id = ""
    artifact_uri = ""

    def __enter__(self) -> UntrackedRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None

    def set_tags(self, tags: dict[str, str]) -> None:
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        return None

    def log_text(self, text: str, artifact_file: str) -> None:
        return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing) for the duration of the block."""
    import fcntl

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mlflow_key(name: str) -> str:
    """MLflow forbids ``@`` in metric names: ``val/ndcg@20`` is logged as ``val/ndcg_at_20``."""
    return name.replace("@", "_at_")


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:_MAX_PARAM_LENGTH]
