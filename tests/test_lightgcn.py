"""LightGCN: the normalised graph, its product and gradient, propagation against a dense reference,
the regulariser by hand, and one propagation per step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.evaluation.evaluator import FullRankingEvaluator
from recsys.interfaces import Negatives
from recsys.losses import bpr_loss
from recsys.models.base import TrainingParts
from recsys.models.graph import NormalizedBipartiteGraph, normalized_blocks
from recsys.models.lightgcn import LightGCN, LightGCNConfig
from recsys.samplers.uniform import UniformSampler
from tests.factories import rows_interactions

# 4 users, 5 items; item 4 has no edge, user 3 one edge.
ROWS = [[0, 1, 2], [1, 3], [0, 2, 3], [1]]


def _dense_adjacency() -> np.ndarray:
    """``A~`` of ROWS built by hand: ``[[0, R], [R^T, 0]]`` scaled by ``1 / sqrt(d_a d_b)``."""
    users, items = len(ROWS), 5
    adjacency = np.zeros((users + items, users + items))
    for user, row in enumerate(ROWS):
        for item in row:
            adjacency[user, users + item] = adjacency[users + item, user] = 1.0
    degree = adjacency.sum(axis=1)
    scale = np.where(degree > 0, degree, 1.0) ** -0.5
    return adjacency * scale[:, None] * scale[None, :]


def _model(layers: int = 2, reg_weight: float = 0.0, seed: int = 0) -> LightGCN:
    torch.manual_seed(seed)
    train = rows_interactions(ROWS, 5)
    parts = TrainingParts(
        n_users=4, n_items=5, sampler=UniformSampler(5, n_negatives=1), loss=bpr_loss,
        evaluator=FullRankingEvaluator((2,)), train=train,
    )
    return LightGCN(LightGCNConfig(dim=3, layers=layers, reg_weight=reg_weight), parts)


def test_normalized_blocks_equal_the_hand_built_adjacency() -> None:
    normalized, transposed = normalized_blocks(rows_interactions(ROWS, 5))
    expected = _dense_adjacency()
    np.testing.assert_allclose(normalized.toarray(), expected[:4, 4:], rtol=1e-6)
    np.testing.assert_allclose(transposed.toarray(), expected[4:, :4], rtol=1e-6)
    # User 0 (degree 3) and item 1 (degree 3): 1 / sqrt(9).
    assert normalized[0, 1] == pytest.approx(1 / 3)


def test_block_product_and_its_gradient_match_the_dense_product() -> None:
    graph = NormalizedBipartiteGraph(rows_interactions(ROWS, 5))
    adjacency = torch.tensor(_dense_adjacency(), dtype=torch.float32)
    users = torch.randn(4, 3, requires_grad=True)
    items = torch.randn(5, 3, requires_grad=True)
    new_users, new_items = graph.propagate(users, items)
    reference = adjacency @ torch.cat([users, items])
    torch.testing.assert_close(torch.cat([new_users, new_items]), reference)
    weights = torch.randn(9, 3)
    (torch.cat([new_users, new_items]) * weights).sum().backward()
    # d/dE of sum(W * A~ E) = A~^T W = A~ W (symmetric).
    expected = adjacency.T @ weights
    torch.testing.assert_close(torch.cat([users.grad, items.grad]), expected)


def test_block_product_passes_gradcheck_in_float64() -> None:
    graph = NormalizedBipartiteGraph(rows_interactions(ROWS, 5))
    users = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    items = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, i: graph.propagate(u, i), (users, items))


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_layer_mean_and_its_gradient_match_autograd_through_the_dense_layers(layers: int) -> None:
    graph = NormalizedBipartiteGraph(rows_interactions(ROWS, 5))
    adjacency = torch.tensor(_dense_adjacency(), dtype=torch.float64)
    users = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    items = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(9, 3, dtype=torch.float64)
    layer = total = torch.cat([users, items])
    for _ in range(layers):
        layer = adjacency @ layer
        total = total + layer
    expected = total / (layers + 1)
    expected_grads = torch.autograd.grad((expected * weights).sum(), (users, items))
    mean_users, mean_items = graph.layer_mean(users, items, layers)
    torch.testing.assert_close(torch.cat([mean_users, mean_items]), expected)
    grads = torch.autograd.grad((torch.cat([mean_users, mean_items]) * weights).sum(), (users, items))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)
    assert torch.autograd.gradcheck(lambda u, i: graph.layer_mean(u, i, layers), (users, items))


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_final_embeddings_are_the_mean_over_layers(layers: int) -> None:
    model = _model(layers=layers)
    adjacency = torch.tensor(_dense_adjacency(), dtype=torch.float32)
    layer = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    total = layer.clone()
    for _ in range(layers):
        layer = adjacency @ layer
        total += layer
    expected = total / (layers + 1)
    users, items = model.propagate()
    torch.testing.assert_close(torch.cat([users, items]), expected)
    # Scores are dot products of the final embeddings; the item without edges keeps only E^0/(K+1).
    scores = model.score(torch.tensor([0, 2]), torch.tensor([[1, 4], [0, 3]]))
    torch.testing.assert_close(scores[0, 1], expected[0] @ expected[4 + 4])
    torch.testing.assert_close(items[4], model.item_embedding.weight[4].detach() / (layers + 1))


def test_regularization_is_half_the_squared_layer0_norms_over_the_batch() -> None:
    model = _model(reg_weight=0.1)
    queries, positives = torch.tensor([0, 1]), torch.tensor([1, 3])
    negatives = Negatives.unweighted(torch.tensor([[4, 2], [0, 0]]), torch.zeros(2, 2))
    users, items = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    squares = (users[0] ** 2).sum() + (users[1] ** 2).sum() + (items[1] ** 2).sum() + (items[3] ** 2).sum()
    squares += (items[4] ** 2).sum() + (items[2] ** 2).sum() + 2 * (items[0] ** 2).sum()
    expected = 0.1 * 0.5 * squares / 2
    torch.testing.assert_close(model.regularization(queries, positives, negatives), expected)
    # Fewer of the batch's rows than the table's 5 (1 positive + 2 negatives): the rows alone are squared.
    few = Negatives.unweighted(torch.tensor([[4, 2]]), torch.zeros(1, 2))
    squares = (users[0] ** 2).sum() + (items[1] ** 2).sum() + (items[4] ** 2).sum() + (items[2] ** 2).sum()
    torch.testing.assert_close(model.regularization(queries[:1], positives[:1], few), 0.1 * 0.5 * squares)
    # A shared set (stride-0 view) counts once per query, exactly as its expanded form.
    shared = Negatives.unweighted(torch.tensor([[4, 2]]).expand(2, 2), torch.zeros(2, 2))
    expanded = Negatives.unweighted(torch.tensor([[4, 2], [4, 2]]), torch.zeros(2, 2))
    torch.testing.assert_close(
        model.regularization(queries, positives, shared), model.regularization(queries, positives, expanded)
    )


def test_one_propagation_per_training_step_and_per_evaluation_pass() -> None:
    model = _model(reg_weight=1e-3)
    calls = []
    original = model.propagate
    model.propagate = lambda: calls.append(1) or original()  # type: ignore[method-assign]
    loss = model.training_loss((torch.tensor([0, 1, 2]), torch.tensor([1, 3, 0])))
    loss.backward()
    assert len(calls) == 1
    assert model.user_embedding.weight.grad is not None and model.item_embedding.weight.grad.abs().sum() > 0
    assert model._final is None  # released after the step
    with torch.no_grad():
        model.begin_evaluation()
        model.score_all(torch.tensor([0, 1]))
        model.score(torch.tensor([0]), torch.tensor([[1, 2]]))
        model.end_evaluation()
    assert len(calls) == 2


def test_checkpoints_hold_no_graph() -> None:
    state = _model().state_dict()
    assert set(state) == {"user_embedding.weight", "item_embedding.weight"}
