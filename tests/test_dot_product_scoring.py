"""DotProductModule.score: every path (shared GEMM, catalogue GEMM + gather, gathered_dot, chunked
row gathering) gives the same scores and the same gradients as a plain reference."""

from __future__ import annotations

import pytest
import torch

from recsys.evaluation.evaluator import FullRankingEvaluator
from recsys.losses import bpr_loss
from recsys.models import base
from recsys.models.base import TrainingParts
from recsys.models.mf import MatrixFactorization, MFConfig
from recsys.samplers.uniform import UniformSampler


def _mf(n_items: int) -> MatrixFactorization:
    torch.manual_seed(0)
    parts = TrainingParts(n_users=6, n_items=n_items, sampler=UniformSampler(n_items, 1), loss=bpr_loss,
                          evaluator=FullRankingEvaluator((2,)))
    return MatrixFactorization(MFConfig(dim=5), parts)


def _reference(model: MatrixFactorization, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    users = model.user_embedding.weight[queries]  # [B, d]
    return (model.item_embedding.weight[items] * users.unsqueeze(1)).sum(dim=2)


@pytest.mark.parametrize("gemm_per_candidate", [0, 10**6])  # never / always the catalogue GEMM
# gathered rows with grad (broadcast product) / gathered_dot, or gathered rows (broadcast, bmm) when sparse
@pytest.mark.parametrize("candidates", [3, 5, 300])
@pytest.mark.parametrize("sparse", [False, True])
def test_score_paths_match_reference_values_and_gradients(
    gemm_per_candidate: int, candidates: int, sparse: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("_GEMM_GRAD_ITEMS_PER_CANDIDATE", "_ROWS_GEMM_GRAD_ITEMS_PER_CANDIDATE", "_GEMM_ITEMS_PER_CANDIDATE"):
        monkeypatch.setattr(base, name, gemm_per_candidate)
    model = _mf(n_items=40)
    model._sparse_embeddings = sparse
    queries = torch.tensor([0, 3, 3, 5])
    items = torch.randint(40, (4, candidates))
    expected = _assert_reference_values_and_gradients(model, queries, items)
    with torch.no_grad():
        torch.testing.assert_close(model.score(queries, items), expected.detach())


def _assert_reference_values_and_gradients(model: MatrixFactorization, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores and gradients of ``model.score`` equal the reference's; returns the reference scores."""
    weights = torch.randn(items.shape)
    (model.score(queries, items) * weights).sum().backward()
    got = [p.grad.clone() for p in (model.user_embedding.weight, model.item_embedding.weight)]
    model.zero_grad()
    expected = _reference(model, queries, items.contiguous())
    (expected * weights).sum().backward()
    torch.testing.assert_close(model.score(queries, items), expected)
    for grad, parameter in zip(got, (model.user_embedding.weight, model.item_embedding.weight), strict=True):
        torch.testing.assert_close(grad, parameter.grad)
    return expected


@pytest.mark.parametrize("n_candidates", [3, 100])  # fewer / more shared candidates than the 40 items
def test_shared_candidates_score_by_one_gemm_with_reference_gradients(n_candidates: int) -> None:
    model = _mf(n_items=40)
    queries = torch.tensor([1, 2, 4])
    shared = torch.randint(40, (1, n_candidates), generator=torch.Generator().manual_seed(n_candidates)).expand(3, -1)
    _assert_reference_values_and_gradients(model, queries, shared)


class _Fixed(torch.nn.Module):
    """Returns the same negatives every call (the scoring path under test, not a sampler)."""

    def __init__(self, negatives) -> None:
        super().__init__()
        self.negatives = negatives

    def forward(self, queries, positives, scorer):
        return self.negatives


def test_training_step_scores_pooled_windows_like_gathered_rows() -> None:
    from dataclasses import replace

    sampler = UniformSampler(40, n_negatives=3, pool=8, seed=3)
    queries, positives = torch.tensor([0, 1, 5, 5]), torch.tensor([2, 9, 9, 30])
    negatives = sampler(queries, positives, None)
    assert negatives.extras["pool"][negatives.extras["pool_index"]].equal(negatives.items)
    losses, grads = [], []
    for drawn in (negatives, replace(negatives, extras={})):
        model = _mf(n_items=40)
        model.sampler = _Fixed(drawn)
        loss = model.training_loss((queries, positives))
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.item_embedding.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize(("device", "grad", "sparse", "n_items", "candidates", "path"), [
    # CPU (one thread): gathered_dot from 4 candidates, the catalogue GEMM at <= 8 items per candidate.
    ("cpu", True, False, 40_981, 2, "rows"),
    ("cpu", True, False, 40_981, 5, "gathered"),
    ("cpu", True, False, 38_048, 1001, "gathered"),
    ("cpu", True, False, 1_682, 257, "gemm"),
    ("cpu", True, True, 38_048, 1001, "rows"),  # sparse gradients: rows or GEMM, crossover 32
    ("cpu", True, True, 1_682, 65, "gemm"),
    ("cpu", False, False, 40_981, 2, "gathered"),
    # CUDA (an H200): the GEMM up to 512 items per candidate, gathered rows beyond, never gathered_dot.
    ("cuda", True, False, 40_981, 2, "rows"),
    ("cuda", True, False, 40_981, 65, "rows"),
    ("cuda", True, False, 40_981, 301, "gemm"),
    ("cuda", True, False, 38_048, 1001, "gemm"),
    ("cuda", False, False, 1_682, 65, "gemm"),
    ("cuda", False, True, 40_981, 5, "rows"),
])
def test_candidate_path_follows_the_measured_crossovers(
    device: str, grad: bool, sparse: bool, n_items: int, candidates: int, path: str
) -> None:
    assert base.candidate_path(device, grad, sparse, n_items, candidates) == path
