"""`recsys fit | evaluate | data | ui` end to end, on the bundled sample and a real MLflow store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from mlflow.tracking import MlflowClient

from recsys.cli import main
from tests.served import body_served_by_ui
from recsys.models.mf import MatrixFactorization

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
SAMPLE_ROOT = REPO / "data"


def _fit_args(store: Path, cache: Path, *overrides: str, config: Path = QUICKSTART) -> list[str]:
    return [
        "fit", "-c", str(config), "--data-root", str(SAMPLE_ROOT), "--tracking-uri", f"sqlite:///{store}",
        "--cache-dir", str(cache), "--no-progress", "train.max_epochs=3", *overrides,
    ]


def _runs(store: Path) -> list:
    if not store.exists():
        return []
    client = MlflowClient(f"sqlite:///{store}")
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments]) if experiments else []


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One quickstart fit shared by the tests that inspect what it left behind."""
    folder = tmp_path_factory.mktemp("fit")
    store, cache = folder / "mlflow.db", folder / "cache"
    assert main(_fit_args(store, cache)) == 0
    (run,) = _runs(store)
    return {"store": store, "cache": cache, "run": run, "client": MlflowClient(f"sqlite:///{store}")}


def test_fit_tracks_one_complete_run(fitted: dict) -> None:
    run, client = fitted["run"], fitted["client"]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mf-uniform-bpr-sample"
    assert run.data.params["model.dim"] == "32" and run.data.params["train.lr"] == "0.01"
    for key in ("val/ndcg_at_20", "train/loss", "time/epoch_train_s", "time/eval_s"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [0, 1, 2], key
    # Peak memory once per epoch and once more after testing.
    assert len(client.get_metric_history(run.info.run_id, "sys/peak_rss_mb")) == 4
    for key in ("test/recall_at_20", "test/ndcg_at_10", "test/mrr_at_10", "test/map_at_20", "time/test_eval_s"):
        assert key in run.data.metrics
    assert 0 < run.data.metrics["test/recall_at_20"] <= 1
    tags = run.data.tags
    assert tags["seed"] == "2020" and tags["device"] == "cpu" and tags["version.torch"].startswith("2.")
    assert int(tags["data.n_users"]) == 600 and int(tags["data.test_users"]) > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "per_user", "checkpoints"} <= artifacts


def test_logged_config_and_per_user_metrics_are_complete(fitted: dict) -> None:
    run, client = fitted["run"], fitted["client"]
    folder = Path(client.download_artifacts(run.info.run_id, ""))
    logged = yaml.safe_load((folder / "config.yaml").read_text())
    assert logged["model"] == {"name": "mf", "dim": 32, "init": "xavier_normal", "init_std": 0.1}
    assert logged["train"]["max_epochs"] == 3
    per_user = pl.read_parquet(folder / "per_user" / "test.parquet")
    assert per_user.height == int(run.data.tags["data.test_users"])
    assert per_user["user"].n_unique() == per_user.height
    assert per_user["recall@20"].mean() == pytest.approx(run.data.metrics["test/recall_at_20"], abs=1e-6)


def test_same_seed_gives_identical_test_metrics(fitted: dict, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    assert main(_fit_args(store, fitted["cache"])) == 0
    (again,) = _runs(store)
    first = {k: v for k, v in fitted["run"].data.metrics.items() if k.startswith("test/")}
    second = {k: v for k, v in again.data.metrics.items() if k.startswith("test/")}
    assert first == second


def test_batches_per_call_leaves_training_unchanged(fitted: dict, tmp_path: Path) -> None:
    # Grouping batches into Lightning calls must not change a single optimizer step.
    store = tmp_path / "mlflow.db"
    assert main(_fit_args(store, fitted["cache"], "train.batches_per_call=1")) == 0
    (one_per_call,) = _runs(store)
    assert one_per_call.data.params["train.batches_per_call"] == "1"
    first = {k: v for k, v in fitted["run"].data.metrics.items() if k.startswith(("test/", "train/loss"))}
    second = {k: v for k, v in one_per_call.data.metrics.items() if k.startswith(("test/", "train/loss"))}
    assert first == second and len(first) > 5


def test_another_seed_gives_other_metrics(fitted: dict, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    assert main(_fit_args(store, fitted["cache"], "seed=7")) == 0
    (other,) = _runs(store)
    assert other.data.metrics["test/ndcg_at_20"] != fitted["run"].data.metrics["test/ndcg_at_20"]


def test_evaluate_reproduces_the_test_metrics(fitted: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, client = fitted["run"], fitted["client"]
    checkpoint = Path(client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt"))
    store = tmp_path / "mlflow.db"
    code = main([
        "evaluate", "-c", str(QUICKSTART), "--checkpoint", str(checkpoint), "--data-root", str(SAMPLE_ROOT),
        "--tracking-uri", f"sqlite:///{store}", "--cache-dir", str(fitted["cache"]), "--no-progress",
    ])
    assert code == 0
    (evaluated,) = _runs(store)
    assert evaluated.data.tags["command"] == "evaluate"
    for key, value in run.data.metrics.items():
        if key.startswith("test/"):
            assert evaluated.data.metrics[key] == pytest.approx(value, abs=1e-9), key
    assert "recall@20" in capsys.readouterr().out


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("recsys: error: ") or err.startswith("recsys fit: error: ")
    assert "Traceback" not in err
    return err


def _dataset(root: Path, name: str, text: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "interactions.csv").write_text(text)
    return folder


@pytest.mark.parametrize(
    ("case", "overrides", "expected"),
    [
        ("missing data root", ["--data-root", "/nonexistent/recsys-data"], "data root /nonexistent/recsys-data does not exist"),
        ("missing dataset folder", ["data.name=nothing-here", "data.format=csv", "data.file=x.csv"], "dataset folder"),
        ("missing file", ["data.name=bad", "data.format=csv", "data.file=absent.csv"], "absent.csv: no such file"),
        ("unknown format", ["data.name=bad", "data.format=xml", "data.file=interactions.csv"], "data.format: Input should be"),
        ("malformed line", ["data.name=bad", "data.format=csv", "data.file=interactions.csv"], "interactions.csv:4: item 'x7' is not a non-negative integer"),
        ("negative id", ["data.name=negative", "data.format=csv", "data.file=interactions.csv"], "interactions.csv:3: user '-2' is not a non-negative integer"),
        ("empty after filtering", ["data.name=good", "data.format=csv", "data.file=interactions.csv", "data.rating_threshold=99"], "no interactions left"),
        ("unknown key", ["model.dimension=8"], "model.dimension: unknown key"),
        ("wrong type", ["train.batch_size=many"], "train.batch_size: Input should be a valid integer"),
        ("bad trainer value", ["train.accelerator=quantum"], "train: "),
        ("missing column", ["data.name=good", "data.format=csv", "data.file=interactions.csv", "data.columns.user=uid"], "no user column 'uid'"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    case: str, overrides: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "data"
    shutil.copytree(SAMPLE_ROOT / "sample", root / "sample")
    _dataset(root, "bad", "user,item,rating\n1,2,5\n1,3,4\n2,x7,5\n")
    _dataset(root, "negative", "user,item,rating\n1,2,5\n-2,3,4\n")
    _dataset(root, "good", "user,item,rating\n" + "".join(f"{u},{i},3\n" for u in range(5) for i in range(6)))
    store, cache = tmp_path / "tracking" / "mlflow.db", tmp_path / "cache"
    args = _fit_args(store, cache, *[o for o in overrides if not o.startswith("--") and not o.startswith("/")])
    args[args.index("--data-root") + 1] = str(root)
    if "--data-root" in overrides:
        args[args.index("--data-root") + 1] = overrides[overrides.index("--data-root") + 1]
    assert main(args) == 2, case
    assert expected in _one_line_error(capsys)
    assert _runs(store) == []  # a user's mistake opens no run
    leftovers = [p for p in cache.rglob("*") if p.name.startswith(".tmp")] if cache.exists() else []
    assert leftovers == []


def test_missing_config_file_from_the_console_script(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "fit", "-c", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"recsys: error: {tmp_path / 'nope.yaml'}: no such config file"
    assert not (tmp_path / "tracking").exists()


def test_usage_mistake_is_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["fit"])
    assert exited.value.code == 2
    assert "the following arguments are required: -c/--config" in _one_line_error(capsys)


def test_a_failing_run_is_marked_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def broken(self, queries, items):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(MatrixFactorization, "score", broken)
    store = tmp_path / "mlflow.db"
    assert main(_fit_args(store, tmp_path / "cache")) == 1
    (run,) = _runs(store)
    assert run.info.status == "FAILED"
    assert "injected failure" in run.data.tags["error"]
    assert "RuntimeError: injected failure" in capsys.readouterr().err


def test_an_interrupted_run_is_marked_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self, queries, items):
        raise KeyboardInterrupt

    monkeypatch.setattr(MatrixFactorization, "score", interrupted)
    store = tmp_path / "mlflow.db"
    assert main(_fit_args(store, tmp_path / "cache")) == 1
    (run,) = _runs(store)
    assert run.info.status == "KILLED"


def test_data_info_prints_every_part(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["data", "info", "sample", "--data-root", str(SAMPLE_ROOT), "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sample (csv, random 0.8/0.1/0.1 split, seed 2020)")
    lines = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert set(lines) == {"train", "valid", "test", "all"}
    assert lines["all"][1] == "600" and lines["all"][3] == "20,301"
    total = sum(int(lines[part][3].replace(",", "")) for part in ("train", "valid", "test"))
    assert total == 20301


def test_data_info_unknown_dataset(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info", "nope"]) == 2
    assert "unknown dataset 'nope'" in _one_line_error(capsys)


def test_ui_needs_a_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no tracking store yet" in _one_line_error(capsys)


def test_ui_serves_the_store_on_localhost(fitted: dict) -> None:
    body = body_served_by_ui(["--tracking-uri", f"sqlite:///{fitted['store']}"],
                             "/api/2.0/mlflow/experiments/search?max_results=10")
    assert "quickstart" in body
