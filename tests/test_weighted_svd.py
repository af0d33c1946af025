"""weighted_svd: the closed-form minimiser of Rel-MF's unbiased square loss (PureSVD of Y diag(1/theta))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from factories import rows_interactions

from recsys.cli import main
from recsys.config import load_config
from recsys.evaluation.evaluator import FullRankingEvaluator
from recsys.experiment import fit
from recsys.losses import bpr_loss
from recsys.models import weighted_svd
from recsys.models.base import TrainingParts
from recsys.models.weighted_svd import WeightedSVD, WeightedSVDConfig, soft_thresholded_svd
from recsys.samplers import SAMPLERS
from recsys.samplers.in_batch import InBatchConfig
from recsys.samplers.mnar import MNARSampler
from recsys.samplers.uniform import UniformSampler

ROWS = [[0, 1, 2], [1, 3], [0, 4, 5], [2, 3, 5], [1]]


def test_soft_thresholded_svd_is_the_dense_svds_top_triplets_shrunk() -> None:
    matrix = np.random.default_rng(0).normal(size=(9, 7))
    left, values, right = soft_thresholded_svd(sp.csr_array(matrix), rank=3, reg=0.5, seed=0)
    u, s, vt = np.linalg.svd(matrix)
    np.testing.assert_allclose(values, np.maximum(s[:3] - 0.5, 0), rtol=1e-9)
    np.testing.assert_allclose(left @ np.diag(s[:3]) @ right.T, u[:, :3] @ np.diag(s[:3]) @ vt[:3], atol=1e-9)
    _, clipped, _ = soft_thresholded_svd(sp.csr_array(matrix), rank=3, reg=s[1] + 1e-3, seed=0)
    assert clipped[1] == 0 and clipped[2] == 0 and clipped[0] == pytest.approx(s[0] - s[1] - 1e-3)


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_the_closed_form_minimises_the_penalised_square_loss(reg: float) -> None:
    """Against an independent minimiser: Adam on |M - P Q^T|^2 + reg (|P|^2 + |Q|^2) from random starts."""
    matrix = np.random.default_rng(1).normal(size=(8, 6))
    left, values, right = soft_thresholded_svd(sp.csr_array(matrix), rank=2, reg=reg, seed=0)
    p, q = left * np.sqrt(values), right * np.sqrt(values)

    def objective(p: np.ndarray, q: np.ndarray) -> float:
        return float(((matrix - p @ q.T) ** 2).sum() + reg * ((p**2).sum() + (q**2).sum()))

    target = torch.tensor(matrix)
    best = np.inf
    for start in range(3):
        torch.manual_seed(start)
        pq = [torch.randn(8, 2, dtype=torch.float64, requires_grad=True), torch.randn(6, 2, dtype=torch.float64, requires_grad=True)]
        optimizer = torch.optim.Adam(pq, lr=0.02)
        for _ in range(4000):
            optimizer.zero_grad()
            loss = ((target - pq[0] @ pq[1].T) ** 2).sum() + reg * sum((x**2).sum() for x in pq)
            loss.backward()
            optimizer.step()
        best = min(best, loss.item())
    assert objective(p, q) == pytest.approx(best, rel=1e-6)
    assert objective(p, q) <= best + 1e-9


def _model(sampler, rank: int = 2, reg: float = 0.0) -> WeightedSVD:
    train = rows_interactions(ROWS, 6)
    parts = TrainingParts(n_users=5, n_items=6, sampler=sampler, loss=bpr_loss,
                          evaluator=FullRankingEvaluator((2,)), train=train)
    return WeightedSVD(WeightedSVDConfig(rank=rank, reg=reg), parts)


def test_each_click_weighs_the_samplers_inverse_propensity(monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows_interactions(ROWS, 6)
    theta = np.array([1.0, 0.5, 0.25, 0.05, 0.8, 0.1])
    clipped = np.clip(theta, 0.1, 1.0)
    model = _model(MNARSampler(UniformSampler(6, 1, train.csr(), seed=1), clipped, seed=0))
    expected = np.zeros((5, 6))
    for user, row in enumerate(ROWS):
        expected[user, row] = 1 / clipped[row]
    np.testing.assert_allclose(model.weighted_clicks().toarray(), expected)
    # Read in chunks of a few pairs: the same weights.
    monkeypatch.setattr(weighted_svd, "_CHUNK_PAIRS", 3)
    np.testing.assert_allclose(model.weighted_clicks().toarray(), expected)
    # Without a correcting sampler every click weighs 1: PureSVD of the clicks.
    for sampler in (UniformSampler(6, 1, train.csr(), seed=1), SAMPLERS.build(InBatchConfig(), train, 0)):
        plain = _model(sampler)
        np.testing.assert_array_equal(plain.weighted_clicks().toarray(), (expected > 0).astype(float))


def test_scores_are_the_factorisation_of_the_weighted_clicks() -> None:
    train = rows_interactions(ROWS, 6)
    model = _model(UniformSampler(6, 1, train.csr(), seed=1), rank=3)
    model.fit_factors()
    dense = model.weighted_clicks().toarray()
    u, s, vt = np.linalg.svd(dense)
    expected = u[:, :3] @ np.diag(s[:3]) @ vt[:3]
    with torch.no_grad():
        scores = model.score_all(torch.arange(5)).double().numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_a_rank_at_the_matrix_size_is_a_config_error() -> None:
    train = rows_interactions(ROWS, 6)
    with pytest.raises(Exception, match=r"model.rank: 5 must be below min\(users, items\) = 5"):
        _model(UniformSampler(6, 1, train.csr(), seed=1), rank=5)


def _synth(root: Path, name: str, eta: float, **sizes: str) -> None:
    flags = [f"--{key}={value}" for key, value in sizes.items()]
    assert main(["data", "synth", name, "--data-root", str(root), "--eta", str(eta), "--test-labels", "top",
                 "--seed", "5", *flags]) == 0


def test_fit_runs_in_one_epoch_and_a_bad_rank_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _synth(tmp_path, "toy", 1.0, users="120", items="60", **{"test-per-user": "10", "clicks-per-user": "8"})
    config = load_config(Path("configs/synth/weighted_svd.yaml"), ["data.name=toy", "tracking.log_checkpoint=false"])
    result = fit(config, tmp_path, f"sqlite:///{tmp_path}/mlflow.db", progress=False)
    assert result.epochs == 1 and result.best_epoch == 0
    assert 0 < result.test["ndcg@5"] <= 1
    code = main(["fit", "-c", "configs/synth/weighted_svd.yaml", "--data-root", str(tmp_path),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--no-progress", "data.name=toy", "model.rank=60"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("recsys: error: model.rank: 60 must be below")


@pytest.mark.slow
def test_with_true_propensities_the_correction_ranks_true_relevance_better_only_under_bias(tmp_path: Path) -> None:
    """Issue 7's semi-synthetic point at the generator's default sizes (docs/results.md measures it on seeds)."""
    ndcg = {}
    for eta in (1.0, 0.0):
        _synth(tmp_path, f"eta{eta:g}", eta)
        theta = tmp_path / f"eta{eta:g}" / "propensity.npy"
        for label, overrides in (("uncorrected", ["sampler.clip=1.0"]), ("corrected", [f"sampler.propensity_file={theta}"])):
            config = load_config(Path("configs/synth/weighted_svd.yaml"),
                                 [f"data.name=eta{eta:g}", "tracking.log_checkpoint=false", f"eval.propensity_file={theta}", *overrides])
            ndcg[eta, label] = fit(config, tmp_path, f"sqlite:///{tmp_path}/mlflow.db", progress=False).test["ndcg@5"]
    assert ndcg[1.0, "corrected"] > ndcg[1.0, "uncorrected"] + 0.03
    assert ndcg[0.0, "corrected"] == pytest.approx(ndcg[0.0, "uncorrected"], abs=1e-6)  # theta is constant at eta 0
