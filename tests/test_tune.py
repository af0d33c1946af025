"""`recsys tune`: search spaces (conditional, grid), trials as nested MLflow runs, pruned trials KILLED
not FAILED, the best config reproducing its trial, resume without losing trials, local workers, and
an interrupted study that resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.errors import ConfigError
from recsys.tuning import study as study_module
from recsys.tuning.space import load_space
from tests.served import body_served_by_ui

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
SAMPLE_ROOT = ROOT / "data"
FAST = ["train.max_epochs=2", "model.dim=8"]


def _space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SMALL_SPACE = """
sampler: random
pruner: none
seed: 3
parameters:
  train.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
  sampler.name: {type: categorical, choices: [uniform, popularity]}
  sampler.alpha: {type: float, low: 0.0, high: 1.0, when: {sampler.name: popularity}}
"""


def _tune_args(tmp_path: Path, space: Path, trials: int, *extra: str) -> list[str]:
    return ["tune", "-c", str(QUICKSTART), "--space", str(space), "--trials", str(trials),
            "--storage", f"sqlite:///{tmp_path}/optuna.db", "--study", "s", "--data-root", str(SAMPLE_ROOT),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "best.yaml"), *extra, *FAST]


def _trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db").trials


def _runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("parameters: {}", "parameters: give at least one"),
        ("parameters: {a: {type: float, low: 2, high: 1}}", "parameters.a: a float parameter needs low <= high"),
        ("parameters: {a: {type: categorical}}", "parameters.a: a categorical parameter needs choices"),
        ("parameters: {a: {type: int, low: 1, high: 3, when: {b: 1}}, b: {type: int, low: 0, high: 1}}",
         "a: when refers to 'b', which is not a parameter declared before it"),
        ("sampler: grid\nparameters: {a: {type: float, low: 0, high: 1}}", "a: a grid search needs categorical or int"),
        ("parameters: {a: {type: float, low: 0, high: 1, lower: 0}}", "parameters.a.lower: Extra inputs"),
        ("[1, 2]", "a search space is a mapping"),
    ],
)
def test_space_mistakes_name_the_file_and_key(text: str, expected: str, tmp_path: Path) -> None:
    path = _space(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_space(path)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)


def test_conditional_parameters_are_suggested_only_when_their_condition_holds(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, SMALL_SPACE))
    fixed = {"train.lr": 0.01, "sampler.name": "popularity", "sampler.alpha": 0.3}
    assert space.suggest(optuna.trial.FixedTrial(fixed)) == fixed
    uniform = {"train.lr": 0.01, "sampler.name": "uniform"}
    assert space.suggest(optuna.trial.FixedTrial({**uniform, "sampler.alpha": 0.3})) == uniform


def test_a_grid_space_enumerates_choices_and_int_ranges(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, "sampler: grid\nparameters:\n  model.dim: {type: int, low: 8, high: 24, step: 8}\n"
                                        "  loss.name: {type: categorical, choices: [bpr, bce]}\n"))
    assert space.grid() == {"model.dim": [8, 16, 24], "loss.name": ["bpr", "bce"]}


def test_a_study_tracks_trials_as_nested_runs_and_exports_a_reproducible_best_config(tmp_path: Path, capsys) -> None:
    space = _space(tmp_path, SMALL_SPACE)
    assert main(_tune_args(tmp_path, space, 3)) == 0
    out = capsys.readouterr().out
    assert "3 complete, 0 pruned trials" in out and f"best config: {tmp_path / 'best.yaml'}" in out
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    runs = _runs(tmp_path)
    (parent,) = [run for run in runs if run.data.tags.get("command") == "tune"]
    nested = {run.data.tags["optuna.trial"]: run for run in runs if run is not parent}
    assert parent.info.status == "FINISHED" and set(nested) == {"0", "1", "2"}
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in nested.values())
    best = max(trials, key=lambda t: t.value)
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert nested[str(best.number)].data.metrics["val/ndcg_at_20"] >= 0  # the trial's own curve is logged
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "trials.csv", "plots"} <= artifacts
    assert "plots/optimization_history.png" in {i.path for i in client.list_artifacts(parent.info.run_id, "plots")}
    # `recsys fit` on the exported config gives exactly the best trial's test metrics.
    refit = tmp_path / "refit"
    assert main(["fit", "-c", str(tmp_path / "best.yaml"), "--data-root", str(SAMPLE_ROOT), "--tracking-uri",
                 f"sqlite:///{refit}/mlflow.db", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    refit_client = MlflowClient(f"sqlite:///{refit}/mlflow.db")
    (again,) = refit_client.search_runs([refit_client.get_experiment_by_name("quickstart").experiment_id])
    original = nested[str(best.number)].data.metrics
    for key, value in again.data.metrics.items():
        if key.startswith("test/"):
            assert value == pytest.approx(original[key], abs=1e-9), key


def test_pruned_trials_end_as_killed_runs_and_count_toward_the_budget(tmp_path: Path, monkeypatch) -> None:
    # A pruner that prunes every trial at its first validation (no NDCG reaches 2).
    monkeypatch.setattr(study_module, "_pruner", lambda space: optuna.pruners.ThresholdPruner(lower=2.0))
    space = _space(tmp_path, SMALL_SPACE.replace("pruner: none", "pruner: median"))
    assert main(_tune_args(tmp_path, space, 2)) == 0
    assert [t.state for t in _trials(tmp_path)] == [optuna.trial.TrialState.PRUNED] * 2
    nested = [run for run in _runs(tmp_path) if "optuna.trial" in run.data.tags]
    assert len(nested) == 2
    for run in nested:
        assert run.info.status == "KILLED" and run.data.tags["stopped_by"].startswith("TrialPruned")
    assert not (tmp_path / "best.yaml").exists()  # nothing finished, nothing to export


def test_resume_continues_without_repeating_finished_trials(tmp_path: Path, capsys) -> None:
    space = _space(tmp_path, SMALL_SPACE)
    assert main(_tune_args(tmp_path, space, 2)) == 0
    first = [(t.number, t.params, t.value) for t in _trials(tmp_path)]
    assert main(_tune_args(tmp_path, space, 3, "--resume")) == 0
    after = _trials(tmp_path)
    assert [(t.number, t.params, t.value) for t in after[:2]] == first
    assert len(after) == 3 and after[2].state == optuna.trial.TrialState.COMPLETE
    assert main(_tune_args(tmp_path, space, 3)) == 0  # the budget is reached: nothing new
    assert len(_trials(tmp_path)) == 3


def test_resume_of_a_missing_study_exits_2(tmp_path: Path, capsys) -> None:
    assert main(_tune_args(tmp_path, _space(tmp_path, SMALL_SPACE), 2, "--resume")) == 2
    assert "--resume: no study 's'" in capsys.readouterr().err


def test_two_local_workers_share_one_study(tmp_path: Path) -> None:
    assert main(_tune_args(tmp_path, _space(tmp_path, SMALL_SPACE), 4, "--workers", "2")) == 0
    trials = _trials(tmp_path)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    nested = [run for run in _runs(tmp_path) if "optuna.trial" in run.data.tags]
    assert sorted(int(run.data.tags["optuna.trial"]) for run in nested) == [0, 1, 2, 3]


def test_an_interrupted_study_resumes_and_loses_no_finished_trial(tmp_path: Path) -> None:
    space = _space(tmp_path, SMALL_SPACE)
    args = _tune_args(tmp_path, space, 4)
    args[args.index("train.max_epochs=2")] = "train.max_epochs=6"
    worker = subprocess.Popen([sys.executable, "-m", "recsys.cli", *args], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (tmp_path / "optuna.db").exists():
                done = [t for t in _trials_or_none(tmp_path) if t.state == optuna.trial.TrialState.COMPLETE]
                running = [t for t in _trials_or_none(tmp_path) if t.state == optuna.trial.TrialState.RUNNING]
                if done and running:
                    break
            time.sleep(0.3)
        else:
            pytest.fail("no trial finished in time")
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 1 and "interrupted" in err
    before = {t.number: t.value for t in _trials(tmp_path) if t.state == optuna.trial.TrialState.COMPLETE}
    assert before and all(t.state != optuna.trial.TrialState.RUNNING for t in _trials(tmp_path))
    assert main(_tune_args(tmp_path, space, 4, "--resume")) == 0
    after = _trials(tmp_path)
    assert {t.number: t.value for t in after if t.number in before} == before
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in after) == 4


def _trials_or_none(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    try:
        return _trials(tmp_path)
    except KeyError:  # the study is not created yet
        return []
    except sqlalchemy.exc.SQLAlchemyError:
        # The worker is still creating the storage's tables: this poll's own storage would race it.
        return []


def test_optuna_ui_needs_a_study_storage(tmp_path: Path, capsys) -> None:
    assert main(["ui", "--optuna", "--storage", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no study storage yet" in capsys.readouterr().err


def test_optuna_ui_serves_the_studies_on_localhost(tmp_path: Path) -> None:
    optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="demo-study")
    body = body_served_by_ui(["--optuna", "--storage", f"sqlite:///{tmp_path}/optuna.db"], "/api/studies", wait_s=60)
    assert "demo-study" in body


def test_study_runs_created_by_workers_at_once_are_merged_into_the_oldest(tmp_path: Path) -> None:
    """Two workers each made a study run before seeing the other's (the race a loaded CI machine hit):
    at the end every trial's run hangs under the oldest, the other is deleted, the study names it, and
    another study's runs are left alone."""
    from recsys.tracking.run import TrackedRun

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s")

    def run(name: str, tags: dict[str, str]) -> str:
        with TrackedRun(uri, "quickstart", name, tags) as opened:
            time.sleep(0.01)  # distinct start times
            return opened.run_id

    oldest, newer = (run(f"study-s-{i}", {"optuna.study": "s", "command": "tune"}) for i in range(2))
    other_study = run("study-t", {"optuna.study": "t", "command": "tune"})
    trials = [run(f"trial-{i}", {"optuna.study": "s", "optuna.trial": str(i), "mlflow.parentRunId": parent})
              for i, parent in enumerate([oldest, newer, newer])]
    other_trial = run("t-trial", {"optuna.study": "t", "optuna.trial": "0", "mlflow.parentRunId": other_study})
    study.set_user_attr("mlflow_parent_run_id", newer)  # the last worker to write it

    assert study_module.reconcile_parent_runs(study, uri, "quickstart", "s") == oldest
    client = MlflowClient(uri)
    assert {client.get_run(t).data.tags["mlflow.parentRunId"] for t in trials} == {oldest}
    assert client.get_run(newer).info.lifecycle_stage == "deleted"
    assert client.get_run(oldest).info.lifecycle_stage == "active"
    assert client.get_run(other_trial).data.tags["mlflow.parentRunId"] == other_study
    assert client.get_run(other_study).info.lifecycle_stage == "active"
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db").user_attrs[
        "mlflow_parent_run_id"] == oldest
    # Reconciling again (the other worker ending) changes nothing.
    assert study_module.reconcile_parent_runs(study, uri, "quickstart", "s") == oldest
