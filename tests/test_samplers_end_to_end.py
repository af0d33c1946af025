"""Every sampler trains MF through `recsys fit` by config alone and logs its diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.cli import main

REPO = Path(__file__).resolve().parents[1]

SAMPLERS = {
    "uniform": [],
    "popularity": ["sampler.alpha=0.75"],
    "in_batch": ["loss.name=sampled_softmax", "loss.log_q_correction=true", "loss.mask_accidental_hits=true"],
    "mixed": ["sampler.samplers=[{name: uniform, n_negatives: 4, shared: true}, {name: in_batch, n_negatives: 32}]",
              "loss.name=sampled_softmax"],
    "topk": ["sampler.k=2", "sampler.candidates=16"],
    "ambiguous": ["sampler.candidates=16"],
    "noisy_label_robust": ["loss.name=nbpo"],
    "mnar": ["loss.name=relmf"],
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_trains_and_reports(name: str, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    code = main([
        "fit", "-c", str(REPO / "configs" / "quickstart.yaml"), "--data-root", str(REPO / "data"),
        "--tracking-uri", f"sqlite:///{store}", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        "train.max_epochs=2", "tracking.log_checkpoint=false", f"sampler.name={name}", *SAMPLERS[name],
    ])
    assert code == 0
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["sampler.name"] == name
    for key in ("sampler/hardness", "sampler/false_negative_rate", "sampler/negative_popularity", "time/sampling_s"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [0, 1], key
    assert 0.0 <= run.data.metrics["sampler/hardness"] <= 1.0
    assert 0.0 <= run.data.metrics["sampler/false_negative_rate"] <= 1.0
    assert run.data.metrics["test/recall_at_20"] > 0
