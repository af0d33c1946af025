"""`recsys fit --state-dir`: an interrupted fit, run again, continues from its last epoch in the same MLflow
run and ends exactly where an uninterrupted fit ends; a state folder that is not this fit's is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.config import load_config
from recsys.experiment import ExperimentResult, fit
from recsys.models import RecommenderModule
from tests.test_sessions_end_to_end import _config as session_config
from tests.test_sessions_end_to_end import tiny_sessions

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int, prefix: str = "") -> None:
    """Ctrl-C in the middle of training epoch ``epoch`` of the stage whose run prefix is ``prefix``
    (``refit/``: the refit after a selection run), until ``monkeypatch`` is undone."""

    def interrupted(module, batch, batch_idx) -> None:
        trainer = module.trainer
        if trainer.current_epoch == epoch and batch_idx == 1 and trainer.logger.prefix == prefix:
            raise KeyboardInterrupt

    monkeypatch.setattr(RecommenderModule, "on_train_batch_start", interrupted, raising=False)


def _fit(config, data_root: Path, tmp_path: Path, state: Path | None = None) -> ExperimentResult:
    return fit(config, data_root, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "cache", progress=False,
               state_dir=state)


def _interrupted_then_resumed(config, data_root: Path, tmp_path: Path, epoch: int, prefix: str = "") -> ExperimentResult:
    state = tmp_path / "state"
    with pytest.MonkeyPatch.context() as patch, pytest.raises((KeyboardInterrupt, SystemExit)):
        _interrupt_at(patch, epoch, prefix)
        _fit(config, data_root, tmp_path, state)
    record = json.loads((state / "fit.json").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(record["run_id"]).info.status == "KILLED"
    resumed = _fit(config, data_root, tmp_path, state)
    assert resumed.run_id == record["run_id"]
    # Finished: the per-epoch checkpoints are gone and the folder is not reused.
    assert json.loads((state / "fit.json").read_text())["stage"] == "finished"
    assert not list(state.glob("*-last.ckpt"))
    return resumed


def _history(tmp_path: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.parametrize("model", ["mf", "simplex"])
def test_a_resumed_fit_ends_where_an_uninterrupted_one_does(model: str, tmp_path: Path) -> None:
    """SimpleX's dropout draws from torch's global generator, MF's negatives from the sampler's: both
    must continue as they would have, and the epochs' shuffles too."""
    config = load_config(QUICKSTART, ["train.max_epochs=7", f"model.name={model}"])
    straight = _fit(config, REPO / "data", tmp_path)
    resumed = _interrupted_then_resumed(config, REPO / "data", tmp_path, 4)
    assert resumed.test == straight.test
    assert (resumed.best_epoch, resumed.epochs, resumed.valid) == (straight.best_epoch, straight.epochs, straight.valid)
    # Each epoch is in the run once, with the uninterrupted fit's values.
    for key in ("train/loss", "val/ndcg_at_20"):
        assert _history(tmp_path, resumed.run_id, key) == _history(tmp_path, straight.run_id, key)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumes"] == "1"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} == {"checkpoints/best.ckpt"}


def test_a_refit_interrupted_in_its_refit_stage_resumes_there(tmp_path: Path) -> None:
    config = load_config(QUICKSTART, ["train.max_epochs=6", "train.patience=2", "train.refit=true"])
    straight = _fit(config, REPO / "data", tmp_path)
    resumed = _interrupted_then_resumed(config, REPO / "data", tmp_path, 2, prefix="refit/")
    assert resumed.test == straight.test and resumed.selected_test == straight.selected_test
    assert (resumed.best_epoch, resumed.refit_epochs) == (straight.best_epoch, straight.refit_epochs)
    # The selection run was not repeated: each of its epochs is logged once.
    assert _history(tmp_path, resumed.run_id, "val/ndcg_at_20") == _history(tmp_path, straight.run_id, "val/ndcg_at_20")
    assert _history(tmp_path, resumed.run_id, "refit/train/loss") == _history(tmp_path, straight.run_id, "refit/train/loss")


def test_refit_epochs_resumes(tmp_path: Path) -> None:
    config = load_config(QUICKSTART, ["train.refit_epochs=5"])
    straight = _fit(config, REPO / "data", tmp_path)
    resumed = _interrupted_then_resumed(config, REPO / "data", tmp_path, 3, prefix="refit/")
    assert resumed.test == straight.test and resumed.refit_epochs == 5


def test_a_session_fit_resumes(tmp_path: Path) -> None:
    config = load_config(session_config(tmp_path, "sasrec"), ["train.max_epochs=4", "train.patience=4"])
    data_root = tiny_sessions(tmp_path)
    straight = _fit(config, data_root, tmp_path)
    resumed = _interrupted_then_resumed(config, data_root, tmp_path, 2)
    assert resumed.test == straight.test


def _cli(tmp_path: Path, *extra: str) -> list[str]:
    return ["fit", "-c", str(QUICKSTART), "--data-root", str(REPO / "data"), "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--cache-dir", str(tmp_path / "cache"), "--no-progress", *extra]


def _error(capsys: pytest.CaptureFixture) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_state_folder_of_another_fit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = tmp_path / "state"
    with pytest.MonkeyPatch.context() as patch, pytest.raises((KeyboardInterrupt, SystemExit)):
        _interrupt_at(patch, 1)
        _fit(load_config(QUICKSTART), REPO / "data", tmp_path, state)
    capsys.readouterr()
    assert main(_cli(tmp_path, "--state-dir", str(state), "train.lr=0.05")) == 2
    assert "train.lr: differs from the interrupted fit" in _error(capsys)
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    assert main([*_cli(tmp_path, "--state-dir", str(state)), "--tracking-uri", elsewhere]) == 2
    assert "is tracked in" in _error(capsys)
    assert not (tmp_path / "other.db").exists()  # refused before any store is opened
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    assert main(_cli(tmp_path, "--state-dir", str(stray))) == 2
    assert "holds files but no fit.json" in _error(capsys)


def test_a_fit_saved_before_a_config_key_existed_resumes(tmp_path: Path) -> None:
    """A key added to recsys after the fit started (here the lr_decay keys, removed from its saved
    config) takes its default, which keeps what came before: the fit resumes in its run."""
    config = load_config(QUICKSTART, ["train.max_epochs=4"])
    state = tmp_path / "state"
    with pytest.MonkeyPatch.context() as patch, pytest.raises((KeyboardInterrupt, SystemExit)):
        _interrupt_at(patch, 2)
        _fit(config, REPO / "data", tmp_path, state)
    record = json.loads((state / "fit.json").read_text())
    for key in ("lr_decay", "lr_patience", "min_lr"):
        del record["config"]["train"][key]
    (state / "fit.json").write_text(json.dumps(record))
    resumed = _fit(config, REPO / "data", tmp_path, state)
    assert resumed.run_id == record["run_id"] and resumed.epochs == 4


def test_a_finished_state_folder_is_not_fitted_again(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = tmp_path / "state"
    assert main(_cli(tmp_path, "--state-dir", str(state), "train.max_epochs=2")) == 0
    capsys.readouterr()
    assert main(_cli(tmp_path, "--state-dir", str(state), "train.max_epochs=2")) == 2
    assert "its fit finished (MLflow run" in _error(capsys)


def test_sigterm_then_the_same_command_finishes_the_fit_in_its_run(tmp_path: Path) -> None:
    """The whole path a user takes: `recsys fit --state-dir` stopped by SIGTERM after some epochs (the run
    ends KILLED, the command says how to continue), then the same command again."""
    state = tmp_path / "state"
    command = [sys.executable, "-m", "recsys.cli", *_cli(tmp_path, "--state-dir", str(state), "train.max_epochs=40",
                                                          "train.patience=40")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (state / "select-last.ckpt").is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    assert f"--state-dir {state} continues it" in err
    run_id = json.loads((state / "fit.json").read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "KILLED"
    done_before = len(client.get_metric_history(run_id, "train/loss"))
    assert 1 <= done_before < 40
    second = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"MLflow run {run_id}" in second.stdout
    assert f"continuing the interrupted fit in {state} (select stage, MLflow run {run_id})" in second.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "test/ndcg_at_20" in run.data.metrics
    # Every epoch is in the run; one stopped between its checkpoint and the next epoch is redone, and
    # logs again the same value at the same step.
    for key in ("train/loss", "val/ndcg_at_20"):
        values: dict[int, set[float]] = {}
        for metric in client.get_metric_history(run_id, key):
            values.setdefault(metric.step, set()).add(metric.value)
        assert sorted(values) == list(range(40)) and all(len(found) == 1 for found in values.values())
