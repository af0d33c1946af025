"""The CUDA paths against the CPU: the sparse graph product, ``gathered_dot`` and top-k, then every
model family trained on the GPU and its checkpoint evaluated on the CPU to the same test metrics.

Skipped without a CUDA device (CI has none); run on a GPU machine with ``pytest -m gpu tests/test_gpu.py``
(scripts/device/issue4.sh does).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.evaluation.evaluator import FullRankingEvaluator
from recsys.evaluation.topk import top_k
from recsys.losses import bpr_loss
from recsys.models.base import TrainingParts
from recsys.models.mf import MatrixFactorization, MFConfig
from recsys.models.gathered_dot import gathered_dot
from recsys.models.sparse import SparseMatrix
from recsys.samplers.uniform import UniformSampler
from tests.test_sessions_end_to_end import OBJECTIVES, _config, tiny_sessions

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
SAMPLE_ROOT = REPO / "data"


def test_sparse_products_and_their_gradients_match_the_cpu() -> None:
    matrix = sp.random_array((700, 300), density=0.02, format="csr", dtype=np.float32, random_state=0)
    cpu = SparseMatrix(matrix)
    gpu = SparseMatrix(matrix).cuda()
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 64, generator=generator), torch.randn(700, 64, generator=generator)
    results = []
    for module, device in ((cpu, "cpu"), (gpu, "cuda")):
        # detach: a fresh leaf on each device (x.to("cpu") is x itself, which then requires grad)
        left = x.to(device).detach().requires_grad_()
        right = y.to(device).detach().requires_grad_()
        product, transposed = module.matmul(left), module.transpose_matmul(right)
        (product.pow(2).sum() + transposed.sin().sum()).backward()
        results.append([t.detach().cpu() for t in (product, transposed, left.grad, right.grad)])
    for on_cpu, on_gpu in zip(*results, strict=True):
        torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("candidates", [2, 301, 2001])
def test_gathered_dot_matches_the_cpu(candidates: int) -> None:
    generator = torch.Generator().manual_seed(candidates)
    query, table = torch.randn(256, 64, generator=generator), torch.randn(5000, 64, generator=generator)
    items = torch.randint(0, 5000, (256, candidates), generator=generator)
    weights = torch.randn(256, candidates, generator=generator)
    results = []
    for device in ("cpu", "cuda"):
        q, t = query.to(device).detach().requires_grad_(), table.to(device).detach().requires_grad_()
        scores = gathered_dot(q, t, items.to(device))
        (scores * weights.to(device)).sum().backward()
        results.append([tensor.detach().cpu() for tensor in (scores, q.grad, t.grad)])
    for on_cpu, on_gpu in zip(*results, strict=True):
        torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("n_items", "candidates"), [(5000, 2), (50_000, 5), (5000, 301), (1682, 1001)])
def test_score_paths_on_the_gpu_match_the_cpu(n_items: int, candidates: int) -> None:
    """``score`` takes the rows or the catalogue GEMM on CUDA and ``gathered_dot`` or the rows on the CPU
    (``candidate_path``): the same scores and parameter gradients."""
    torch.manual_seed(0)
    parts = TrainingParts(n_users=256, n_items=n_items, sampler=UniformSampler(n_items, 1), loss=bpr_loss,
                          evaluator=FullRankingEvaluator((2,)))
    cpu = MatrixFactorization(MFConfig(dim=64), parts)
    gpu = copy.deepcopy(cpu).cuda()
    generator = torch.Generator().manual_seed(candidates)
    queries = torch.randint(0, 256, (256,), generator=generator)
    items = torch.randint(0, n_items, (256, candidates), generator=generator)
    weights = torch.randn(256, candidates, generator=generator)
    results = []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        scores = model.score(queries.to(device), items.to(device))
        (scores * weights.to(device)).sum().backward()
        results.append([scores.detach().cpu()] + [p.grad.cpu() for p in model.parameters()])
    for on_cpu, on_gpu in zip(*results, strict=True):
        torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)


def test_top_k_on_the_gpu_finds_the_cpu_values() -> None:
    scores = torch.randn(512, 64 * 40, generator=torch.Generator().manual_seed(0))
    scores[:, 100] = float("-inf")  # a masked item
    values, columns = top_k(scores.cuda(), 20)
    expected = torch.topk(scores, 20).values
    torch.testing.assert_close(values.cpu(), expected)
    torch.testing.assert_close(scores.gather(1, columns.cpu()), expected)


def _runs(store: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{store}")
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              order_by=["attributes.start_time ASC"])


def fit_here_evaluate_there(config: Path, data_root: Path, folder: Path, experiment: str, fit_on: str,
                            evaluate_on: str, overrides: list[str]) -> tuple[dict, dict, dict]:
    """``recsys fit`` on ``fit_on``, then ``recsys evaluate`` of its best checkpoint on ``evaluate_on``
    (Lightning accelerators): the two runs' test metrics and the fit's tags."""
    store = folder / "mlflow.db"
    common = ["--data-root", str(data_root), "--tracking-uri", f"sqlite:///{store}", "--cache-dir",
              str(folder / "cache"), "--no-progress"]
    assert main(["fit", "-c", str(config), *common, f"train.accelerator={fit_on}", *overrides]) == 0
    (fitted,) = _runs(store, experiment)
    checkpoint = MlflowClient(f"sqlite:///{store}").download_artifacts(
        fitted.info.run_id, "checkpoints/best.ckpt", str(folder))
    assert main(["evaluate", "-c", str(config), "--checkpoint", checkpoint, *common,
                 f"train.accelerator={evaluate_on}", *overrides]) == 0
    evaluated = _runs(store, experiment)[-1]
    assert evaluated.data.tags["command"] == "evaluate"

    def test_metrics(run) -> dict:
        return {key: value for key, value in run.data.metrics.items() if key.startswith("test/")}

    return test_metrics(fitted), test_metrics(evaluated), fitted.data.tags


MODELS = {
    "mf, uniform, bpr": [],
    "mf, 300 uniform negatives (gathered_dot), softmax": [
        "sampler.n_negatives=300", "loss.name=sampled_softmax"],
    "mf, topk (DNS) 1 of 64": ["sampler.name=topk", "sampler.k=1", "sampler.candidates=64"],
    "lightgcn": ["model.name=lightgcn", "model.layers=2"],
    "simplex, 64 negatives, ccl": [
        "model.name=simplex", "model.aggregator=mean", "model.gamma=0.5", "sampler.n_negatives=64",
        "loss.name=ccl", "loss.margin=0.8", "loss.negative_weight=10"],
}


@pytest.mark.parametrize("overrides", list(MODELS.values()), ids=list(MODELS))
def test_a_model_trained_on_the_gpu_tests_the_same_on_the_cpu(overrides: list[str], tmp_path: Path) -> None:
    on_gpu, on_cpu, tags = fit_here_evaluate_there(
        QUICKSTART, SAMPLE_ROOT, tmp_path, "quickstart", "gpu", "cpu", ["train.max_epochs=3", *overrides])
    assert tags["device"] == torch.cuda.get_device_name(0)
    assert on_gpu.keys() == on_cpu.keys() and len(on_gpu) > 5
    for key, value in on_gpu.items():
        assert on_cpu[key] == pytest.approx(value, abs=1e-4), key


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_a_session_model_trained_on_the_gpu_tests_the_same_on_the_cpu(objective: str, tmp_path: Path) -> None:
    on_gpu, on_cpu, tags = fit_here_evaluate_there(_config(tmp_path, objective), tiny_sessions(tmp_path), tmp_path,
                                                   "sessions", "gpu", "cpu", [])
    assert tags["device"] == torch.cuda.get_device_name(0)
    assert len(on_gpu) == 4
    for key, value in on_gpu.items():
        assert on_cpu[key] == pytest.approx(value, abs=1e-4), key
