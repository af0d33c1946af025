"""SimpleX: user histories, the user tower by hand, cosine scores, the positive left out of the
history in training, one dropout mask per step, and the cosine contrastive loss by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.evaluation.evaluator import FullRankingEvaluator
from recsys.interfaces import Negatives
from recsys.losses import LOSSES, CCLConfig, ccl_loss
from recsys.models.base import TrainingParts
from recsys.models.history import UserHistories
from recsys.models.simplex import SimpleX, SimpleXConfig
from recsys.samplers.uniform import UniformSampler
from tests.factories import rows_interactions

ROWS = [[0, 1, 2], [3], [], [1, 4, 0, 2]]


def _model(**options) -> SimpleX:
    torch.manual_seed(0)
    train = rows_interactions(ROWS, 5)
    parts = TrainingParts(
        n_users=4, n_items=5, sampler=UniformSampler(5, n_negatives=2), loss=ccl_loss,
        evaluator=FullRankingEvaluator((2,)), train=train,
    )
    config = SimpleXConfig(dim=3, **{"dropout": 0.0, "init_std": 0.5, **options})
    return SimpleX(config, parts)


def test_histories_come_out_ragged() -> None:
    histories = UserHistories(rows_interactions(ROWS, 5), max_len=10)
    items, rows = histories.flat(torch.tensor([3, 2, 1, 0]))
    assert items.tolist() == [1, 4, 0, 2, 3, 0, 1, 2]
    assert rows.tolist() == [0, 0, 0, 0, 2, 3, 3, 3]
    assert histories.contains(torch.tensor([3, 3, 2]), torch.tensor([4, 3, 0])).tolist() == [True, False, False]
    np.testing.assert_allclose(histories.mean_matrix().toarray()[3], [0.25, 0.25, 0.25, 0, 0.25])


def test_histories_keep_the_latest_max_len() -> None:
    train = Interactions(
        users=np.array([0, 0, 0, 0], dtype=np.int32), items=np.array([3, 1, 2, 0], dtype=np.int32),
        n_users=1, n_items=4, user_ids=pl.Series(["u"]), item_ids=pl.Series(list("abcd")),
        timestamps=np.array([40.0, 10.0, 30.0, 20.0]),
    )
    histories = UserHistories(train, max_len=2)
    items, rows = histories.flat(torch.tensor([0]))
    assert items.tolist() == [2, 3] and rows.tolist() == [0, 0]  # times 30 and 40, oldest first
    assert histories.contains(torch.tensor([0, 0]), torch.tensor([2, 1])).tolist() == [True, False]


@pytest.mark.parametrize("aggregator", ["mean", "user_attention", "self_attention"])
def test_user_tower_by_hand(aggregator: str) -> None:
    model = _model(aggregator=aggregator, gamma=0.3).eval()
    users = model.user_embedding.weight.detach()
    items = model.item_embedding.weight.detach()
    history = items[[1, 4, 0, 2]]  # user 3
    if aggregator == "mean":
        pooled = history.mean(dim=0)
    else:
        keys = torch.tanh(history @ model.key.weight.detach().T + model.key.bias.detach())
        query = users[3] if aggregator == "user_attention" else model.attention_query.detach()[:, 0]
        pooled = torch.softmax(keys @ query, dim=0) @ history
    vector = 0.3 * users[3] + 0.7 * (model.value.weight.detach() @ pooled)
    expected = vector / vector.norm()
    with torch.no_grad():
        torch.testing.assert_close(model.user_tower(torch.tensor([3]))[0], expected)
        # Cosine scores: the normalised item rows.
        scores = model.score(torch.tensor([3]), torch.tensor([[2, 4]]))
        torch.testing.assert_close(scores[0], F.normalize(items[[2, 4]], dim=1) @ expected)
        assert model.score_all(torch.tensor([0, 1, 2, 3])).abs().max() <= 1 + 1e-6


def test_empty_history_gives_a_finite_vector() -> None:
    for aggregator in ("mean", "user_attention"):
        model = _model(aggregator=aggregator, gamma=0.5).eval()
        with torch.no_grad():
            vector = model.user_tower(torch.tensor([2]))
        own = model.user_embedding.weight.detach()[2]
        torch.testing.assert_close(vector[0], own / own.norm())


def test_training_leaves_the_positive_out_of_the_history() -> None:
    model = _model(aggregator="mean", gamma=0.0).eval()
    items = model.item_embedding.weight.detach()
    with torch.no_grad():
        vector = model.user_tower(torch.tensor([0]), leave_out=torch.tensor([1]))[0]
    pooled = model.value.weight.detach() @ items[[0, 2]].mean(dim=0)
    torch.testing.assert_close(vector, pooled / pooled.norm())


@pytest.mark.parametrize("aggregator", ["mean", "user_attention", "self_attention"])
def test_leaving_the_positive_out_equals_aggregating_without_it(aggregator: str) -> None:
    """Per query, by subtraction, against a tower built on the history minus the positive; the same
    user twice in a batch with different positives, and a positive outside the history."""
    model = _model(aggregator=aggregator, gamma=0.25).eval()
    users, positives = torch.tensor([3, 0, 3, 1]), torch.tensor([4, 2, 1, 0])  # item 0 is not user 1's
    with torch.no_grad():
        got = model.user_tower(users, leave_out=positives)
    emb_u, emb_i = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    for row, (user, positive) in enumerate(zip(users.tolist(), positives.tolist(), strict=True)):
        history = emb_i[[item for item in ROWS[user] if item != positive]]
        if aggregator == "mean":
            pooled = history.mean(dim=0)
        else:
            keys = torch.tanh(history @ model.key.weight.detach().T + model.key.bias.detach())
            query = emb_u[user] if aggregator == "user_attention" else model.attention_query.detach()[:, 0]
            pooled = torch.softmax(keys @ query, dim=0) @ history
        vector = 0.25 * emb_u[user] + 0.75 * (model.value.weight.detach() @ pooled)
        torch.testing.assert_close(got[row], vector / vector.norm())


def _official_padded_attention(model: SimpleX, user: int, history: list[int], length: int) -> torch.Tensor:
    """The official ``BehaviorAggregator`` on one user's history padded ("pre") with zero rows to
    ``length``: its masked softmax fills padded logits with 0, so each padded slot weighs exp(0)."""
    emb_u, emb_i = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    sequence = torch.zeros(length, emb_i.shape[1])
    if history:
        sequence[length - len(history):] = emb_i[history]
    keys = torch.tanh(sequence @ model.key.weight.detach().T + model.key.bias.detach())  # [L, d]
    query = emb_u[user] if model.aggregator == "user_attention" else model.attention_query.detach()[:, 0]
    logits = (keys @ query).masked_fill(sequence.sum(dim=1) == 0, 0.0)
    attention = torch.exp(logits) / torch.exp(logits).sum()
    vector = model.gamma * emb_u[user] + (1 - model.gamma) * (model.value.weight.detach() @ (attention @ sequence))
    return vector / vector.norm()


@pytest.mark.parametrize("aggregator", ["user_attention", "self_attention"])
def test_padded_length_gives_the_official_padded_softmax(aggregator: str) -> None:
    """Against the official code's arithmetic on padded tensors, with and without leaving the positive
    out (the same user twice, a positive outside the history, an empty history)."""
    model = _model(aggregator=aggregator, gamma=0.25, padded_length=6).eval()
    users, positives = torch.tensor([3, 0, 3, 1, 2]), torch.tensor([4, 2, 1, 0, 1])
    with torch.no_grad():
        left_out = model.user_tower(users, leave_out=positives)
        whole = model.user_tower(users)
    for row, (user, positive) in enumerate(zip(users.tolist(), positives.tolist(), strict=True)):
        kept = [item for item in ROWS[user] if item != positive]
        torch.testing.assert_close(left_out[row], _official_padded_attention(model, user, kept, 6))
        torch.testing.assert_close(whole[row], _official_padded_attention(model, user, ROWS[user], 6))
    # Padding weighs: the padded tower differs from the default one wherever a history is shorter.
    default = _model(aggregator=aggregator, gamma=0.25).eval()
    with torch.no_grad():
        assert not torch.allclose(default.user_tower(torch.tensor([3])), whole[0:1])


def test_padded_length_is_refused_for_the_mean() -> None:
    with pytest.raises(ConfigError, match="model.padded_length"):
        _model(aggregator="mean", padded_length=6)


def test_a_history_of_only_the_positive_pools_to_zero() -> None:
    model = _model(aggregator="user_attention", gamma=0.5).eval()
    with torch.no_grad():
        vector = model.user_tower(torch.tensor([1]), leave_out=torch.tensor([3]))[0]  # user 1 has only item 3
    own = model.user_embedding.weight.detach()[1]
    torch.testing.assert_close(vector, own / own.norm())


def test_gamma_one_needs_no_history() -> None:
    model = _model(gamma=1.0)
    assert model.histories is None


def test_one_dropout_mask_per_step() -> None:
    model = _model(dropout=0.5, gamma=0.5).train()
    queries, positives = torch.tensor([0, 3]), torch.tensor([1, 0])
    model.begin_step(queries, positives)
    first = model.query_embeddings(queries)
    again = model.query_embeddings(queries)
    assert first is again
    model.end_step()
    # Outside the step: a fresh tower, with a new dropout mask.
    assert model._step is None


def test_training_step_runs_and_reaches_the_tower() -> None:
    model = _model(aggregator="user_attention", gamma=0.5, l2=1e-3).train()
    loss = model.training_loss((torch.tensor([0, 1, 3]), torch.tensor([1, 3, 4])))
    loss.backward()
    assert model.value.weight.grad is not None and model.key.weight.grad is not None
    assert model.user_embedding.weight.grad is not None


def test_l2_is_half_the_squared_tables() -> None:
    model = _model(l2=0.2)
    tables = model.user_embedding.weight.detach().pow(2).sum() + model.item_embedding.weight.detach().pow(2).sum()
    negatives = Negatives.unweighted(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1))
    torch.testing.assert_close(model.regularization(torch.tensor([0]), torch.tensor([1]), negatives), 0.1 * tables)


# CCL: two positives (cos 0.8, -0.2) with three negatives each, margin 0.5.
POS = torch.tensor([0.8, -0.2], dtype=torch.float64)
NEG = torch.tensor([[0.9, 0.4, 0.6], [0.5, 0.7, -1.0]], dtype=torch.float64)


def test_ccl_sums_negatives_above_the_margin() -> None:
    negatives = Negatives.unweighted(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.float64))
    # Row 0: (1 - 0.8) + (0.4 + 0 + 0.1) = 0.7; row 1: (1 + 0.2) + (0 + 0.2 + 0) = 1.4; mean 1.05.
    assert ccl_loss(POS, NEG, negatives, margin=0.5).item() == pytest.approx(1.05)
    # w = 6 over N = 3 negatives doubles the negative term: 0.2 + 1.0, 1.2 + 0.4 -> mean 1.4.
    assert ccl_loss(POS, NEG, negatives, margin=0.5, negative_weight=6.0).item() == pytest.approx(1.4)


def test_ccl_reads_the_weights() -> None:
    weight = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    negatives = Negatives(
        items=torch.zeros(2, 3, dtype=torch.long), log_q=torch.zeros(2, 3, dtype=torch.float64), weight=weight,
        pos_weight=torch.tensor([1.0, 0.5], dtype=torch.float64),
    )
    # Row 0: 0.2 + 0.4 = 0.6; row 1: 0.5 * 1.2 + 2 * 0.2 = 1.0; mean 0.8.
    assert ccl_loss(POS, NEG, negatives, margin=0.5).item() == pytest.approx(0.8)


def test_ccl_by_name() -> None:
    loss = LOSSES.build(CCLConfig(margin=0.5, negative_weight=6.0))
    negatives = Negatives.unweighted(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.float64))
    assert loss(POS, NEG, negatives).item() == pytest.approx(1.4)
