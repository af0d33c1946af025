"""Every model trains through `recsys fit` by config alone, with samplers of every kind."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.cli import main

REPO = Path(__file__).resolve().parents[1]

MODELS = {
    "lightgcn": ["model.layers=2"],
    "simplex": ["model.aggregator=user_attention", "loss.name=ccl"],
}
SAMPLERS = {
    "uniform": [],
    "topk": ["sampler.name=topk", "sampler.candidates=16"],
    "in_batch": ["sampler.name=in_batch", "loss.name=sampled_softmax", "loss.log_q_correction=true"],
}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_trains_with_sampler(model: str, sampler: str, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    code = main([
        "fit", "-c", str(REPO / "configs" / "quickstart.yaml"), "--data-root", str(REPO / "data"),
        "--tracking-uri", f"sqlite:///{store}", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        "train.max_epochs=2", f"model.name={model}", *MODELS[model], *SAMPLERS[sampler],
    ])
    assert code == 0
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["model.name"] == model
    assert run.data.metrics["test/recall_at_20"] > 0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "sampler/hardness")] == [0, 1]


def test_checkpoint_of_a_graph_model_evaluates_to_the_same_metrics(tmp_path: Path) -> None:
    """`recsys evaluate` rebuilds the graph from the data and reproduces fit's test metrics."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--data-root", str(REPO / "data"), "--tracking-uri", store, "--cache-dir", str(tmp_path / "cache"),
              "--no-progress"]
    config = str(REPO / "configs" / "quickstart.yaml")
    assert main(["fit", "-c", config, *common, "train.max_epochs=2", "model.name=lightgcn"]) == 0
    client = MlflowClient(store)
    (fitted,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    checkpoint = Path(client.download_artifacts(fitted.info.run_id, "checkpoints/best.ckpt", str(tmp_path)))
    assert main(["evaluate", "-c", config, *common, "--checkpoint", str(checkpoint), "model.name=lightgcn"]) == 0
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time DESC"])
    evaluated = runs[0].data.metrics
    for key in ("test/recall_at_20", "test/ndcg_at_20"):
        assert evaluated[key] == pytest.approx(fitted.data.metrics[key], abs=1e-6)
