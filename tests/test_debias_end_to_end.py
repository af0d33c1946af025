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
