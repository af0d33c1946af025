"""`train.refit`: select the epoch count on validation, then train afresh on train + validation and test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.data.interactions import Split
from recsys.data.splits import refit_split
from factories import rows_interactions

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "quickstart.yaml")


def _pairs(part) -> set[tuple[int, int]]:
    return set(zip(part.users.tolist(), part.items.tolist()))


def test_refit_split_trains_on_train_and_validation_and_tests_as_before() -> None:
    train = rows_interactions([[0, 1], [2], [3, 4]], n_items=6)
    valid = rows_interactions([[2], [5], [0]], n_items=6)
    test = rows_interactions([[3], [0], [5]], n_items=6)
    merged = refit_split(Split(train=train, valid=valid, test=test))
    assert _pairs(merged.train) == _pairs(train) | _pairs(valid)
    assert len(merged.train) == len(train) + len(valid)
    assert _pairs(merged.test) == _pairs(test)
    # Test ranking masks train and validation items, before and after: the same set.
    assert _pairs(merged.train.union(merged.valid)) == _pairs(train.union(valid))


def _common(tmp_path: Path) -> list[str]:
    return ["--data-root", str(REPO / "data"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]


def _only_run(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time DESC"])
    return client, runs


@pytest.mark.parametrize("model", ["mf", "lightgcn"])
def test_refit_trains_the_selected_epochs_on_train_and_validation(model: str, tmp_path: Path, capsys) -> None:
    code = main(["fit", "-c", CONFIG, *_common(tmp_path), "train.max_epochs=6", "train.patience=2",
                 f"model.name={model}", "train.refit=true"])
    assert code == 0
    assert "test (refit," in capsys.readouterr().out
    client, (run,) = _only_run(tmp_path)
    tags, metrics = run.data.tags, run.data.metrics
    best = int(tags["best_epoch"])
    # best epoch + 1 refit epochs, each logged under refit/, on train + validation interactions.
    assert tags["refit_epochs"] == str(best + 1)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "refit/train/loss")]
    assert steps == list(range(best + 1))
    n_train, n_valid = int(tags["data.train_interactions"]), int(tags["data.valid_interactions"])
    assert tags["data.refit_train_interactions"] == str(n_train + n_valid)
    # The refit never validates: validation metrics come from the selection run only.
    assert not [key for key in metrics if key.startswith("refit/val/")]
    assert len(client.get_metric_history(run.info.run_id, "val/ndcg_at_20")) == int(tags["epochs"])
    # Both models are tested; test/ is the refitted one.
    assert metrics["selected/test/recall_at_20"] > 0 and metrics["test/recall_at_20"] > 0
    assert metrics["selected/test/ndcg_at_20"] != metrics["test/ndcg_at_20"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/best.ckpt", "checkpoints/refit.ckpt"}


def test_refit_epochs_alone_trains_the_same_refit_without_a_selection_run(tmp_path: Path) -> None:
    """``train.refit_epochs=N`` skips the selection run; with N = the selected count it is the same refit
    (same seed, same data), so it tests the same."""
    common = _common(tmp_path)
    assert main(["fit", "-c", CONFIG, *common, "train.max_epochs=6", "train.patience=2", "train.refit=true"]) == 0
    client, (refitted,) = _only_run(tmp_path)
    epochs = refitted.data.tags["refit_epochs"]
    assert main(["fit", "-c", CONFIG, *common, f"train.refit_epochs={epochs}"]) == 0
    direct = _only_run(tmp_path)[1][0]
    assert direct.data.tags["refit_epochs"] == epochs
    assert not [key for key in direct.data.metrics if key.startswith(("val/", "selected/"))]
    steps = [m.step for m in client.get_metric_history(direct.info.run_id, "refit/train/loss")]
    assert steps == list(range(int(epochs)))
    for key in ("test/recall_at_20", "test/ndcg_at_20", "test/mrr_at_10"):
        assert direct.data.metrics[key] == pytest.approx(refitted.data.metrics[key], abs=1e-6)


def test_a_time_budget_ends_the_refit_and_tests_what_it_trained(tmp_path: Path, capsys) -> None:
    assert main(["fit", "-c", CONFIG, *_common(tmp_path), "train.refit_epochs=100000",
                 "train.max_time=00:00:00:02"]) == 0
    client, (run,) = _only_run(tmp_path)
    trained = int(run.data.tags["refit_epochs"])
    assert 0 < trained < 100000 and run.data.tags["refit_epochs_planned"] == "100000"
    assert len(client.get_metric_history(run.info.run_id, "refit/train/loss")) == trained
    assert run.data.metrics["test/recall_at_20"] > 0
    assert f"the refit trained {trained} of 100000 epochs (train.max_time)" in capsys.readouterr().err


def test_a_refitted_checkpoint_evaluates_to_the_refit_metrics(tmp_path: Path) -> None:
    """`recsys evaluate` rebuilds LightGCN's graph from train + validation for a refit's checkpoint (the
    checkpoint says so); built from train alone, as for any other checkpoint, the metrics differ."""
    common = _common(tmp_path)
    assert main(["fit", "-c", CONFIG, *common, "train.max_epochs=3", "model.name=lightgcn", "train.refit=true"]) == 0
    client, (fitted,) = _only_run(tmp_path)
    checkpoint = Path(client.download_artifacts(fitted.info.run_id, "checkpoints/refit.ckpt", str(tmp_path)))
    assert main(["evaluate", "-c", CONFIG, *common, "--checkpoint", str(checkpoint), "model.name=lightgcn"]) == 0
    evaluated = _only_run(tmp_path)[1][0].data.metrics
    for key in ("test/recall_at_20", "test/ndcg_at_20"):
        assert evaluated[key] == pytest.approx(fitted.data.metrics[key], abs=1e-6)

    saved = torch.load(checkpoint, weights_only=True)
    del saved["recsys_trained_on"]
    unmarked = tmp_path / "unmarked.ckpt"
    torch.save(saved, unmarked)
    assert main(["evaluate", "-c", CONFIG, *common, "--checkpoint", str(unmarked), "model.name=lightgcn"]) == 0
    on_train_only = _only_run(tmp_path)[1][0].data.metrics
    assert on_train_only["test/ndcg_at_20"] != pytest.approx(fitted.data.metrics["test/ndcg_at_20"], abs=1e-6)


def test_refit_is_refused_for_sessions_and_in_a_search(tmp_path: Path, capsys) -> None:
    sessions = str(REPO / "configs" / "yoochoose" / "sasrec.yaml")
    assert main(["fit", "-c", sessions, *_common(tmp_path), "train.refit=true"]) == 2
    assert "train.refit: refitting on train + validation is for user-item splits" in capsys.readouterr().err
    space = str(REPO / "configs" / "search" / "mf.yaml")
    assert main(["tune", "-c", CONFIG, "--space", space, "--trials", "1", "--storage",
                 f"sqlite:///{tmp_path / 'optuna.db'}", *_common(tmp_path)[:-1], "train.refit=true"]) == 2
    assert "train.refit: a search ranks trials on validation" in capsys.readouterr().err
    assert main(["fit", "-c", sessions, *_common(tmp_path), "train.refit_epochs=3"]) == 2
    assert "train.refit_epochs: refitting on train + validation is for user-item splits" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("model", ["mf", "lightgcn"])
def test_a_refit_test_curve_ends_at_the_refit_test_and_changes_no_weight(model: str, tmp_path: Path) -> None:
    """``train.refit_test_every=2`` tests after epochs 1 and 3 of a 4-epoch refit. Its last point ranks
    the last weights on the test set as the final test does, so it equals it; and testing along the
    way leaves the training as it was: the final test equals a refit without the curve."""
    common = [*_common(tmp_path), f"model.name={model}", "train.refit_epochs=4"]
    assert main(["fit", "-c", CONFIG, *common]) == 0
    client, (plain,) = _only_run(tmp_path)
    assert not [key for key in plain.data.metrics if key.startswith("refit/test/")]
    assert main(["fit", "-c", CONFIG, *common, "train.refit_test_every=2"]) == 0
    curved = _only_run(tmp_path)[1][0]
    for key in ("recall_at_20", "ndcg_at_20", "mrr_at_10"):
        history = client.get_metric_history(curved.info.run_id, f"refit/test/{key}")
        assert [m.step for m in history] == [1, 3]
        assert history[-1].value == pytest.approx(curved.data.metrics[f"test/{key}"], abs=1e-6)
        assert curved.data.metrics[f"test/{key}"] == pytest.approx(plain.data.metrics[f"test/{key}"], abs=1e-6)
    assert history[0].value != history[-1].value  # two points of a curve, not one value twice
    # The sampler probe counts test positives as its false negatives (validation is in train now).
    assert "refit/sampler/false_negative_rate" in curved.data.metrics
    assert not [key for key in curved.data.metrics if key.startswith(("val/", "refit/val/"))]


def test_a_test_curve_without_a_refit_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["fit", "-c", CONFIG, *_common(tmp_path), "train.refit_test_every=5"]) == 2
    assert "train.refit_test_every: a test curve is for a refit" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
