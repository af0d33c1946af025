"""Rel-MF and the exposed protocol end to end on the real Coat data: tracked test and rare-item metrics,
SNIPS validation, per-user vectors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from recsys.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

pytestmark = pytest.mark.skipif(not (SHARED / "coat").is_dir(), reason="../shared/data/coat is not there")


def test_relmf_on_coat_logs_exposed_and_rare_metrics(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    code = main([
        "fit", "-c", str(REPO / "configs" / "coat" / "relmf.yaml"), "--data-root", str(SHARED),
        "--tracking-uri", f"sqlite:///{store}", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        "train.max_epochs=3",
    ])
    assert code == 0
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    metrics = run.data.metrics
    for k in (1, 3, 5):
        for name in ("dcg", "recall", "map", "snips_dcg", "snips_recall"):
            assert 0.0 <= metrics[f"test/{name}_at_{k}"]
            assert 0.0 <= metrics[f"test/rare/{name}_at_{k}"]
        assert metrics[f"test/recall_at_{k}"] <= 1.0
    assert "val/snips_dcg_at_5" in metrics
    # Per-user vectors for paired tests: one row per test user with a relevant exposed coat.
    folder = Path(client.download_artifacts(run.info.run_id, "per_user", str(tmp_path)))
    per_user = pl.read_parquet(folder / "test.parquet")
    random = pl.read_csv(SHARED / "coat" / "random.txt", has_header=False, new_columns=["user", "item", "rating"])
    assert per_user.height == random.filter(pl.col("rating") >= 4)["user"].n_unique()
    assert per_user["dcg@5"].mean() == pytest.approx(metrics["test/dcg_at_5"], rel=1e-6)


def test_a_refit_test_curve_on_coat_ranks_the_exposed_test_as_the_final_test(tmp_path: Path) -> None:
    """Under the exposed protocol the curve is the main pass (exposed items of each test user): its
    last point equals the final ``test/``; the rare-item pass is tested at the end only."""
    store = tmp_path / "mlflow.db"
    assert main([
        "fit", "-c", str(REPO / "configs" / "coat" / "relmf.yaml"), "--data-root", str(SHARED),
        "--tracking-uri", f"sqlite:///{store}", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        "train.refit_epochs=4", "train.refit_test_every=2",
    ]) == 0
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    for key in ("dcg_at_5", "recall_at_3", "snips_dcg_at_5"):
        history = client.get_metric_history(run.info.run_id, f"refit/test/{key}")
        assert [m.step for m in history] == [1, 3]
        assert history[-1].value == pytest.approx(run.data.metrics[f"test/{key}"], abs=1e-6)
    assert "test/rare/dcg_at_5" in run.data.metrics
    assert not [key for key in run.data.metrics if key.startswith("refit/test/rare/")]
