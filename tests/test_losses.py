"""Losses against hand-computed numbers, their weights, their stability and their gradients.

Softplus values used below, ``softplus(x) = log(1 + e^x) = -log sigmoid(-x)``:
    softplus(-2)  = 0.1269280110    softplus(-1) = 0.3132616875    softplus(0) = 0.6931471806
    softplus(0.5) = 0.9740769842    softplus(1)  = 1.3132616875    softplus(3) = 3.0485873516
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from recsys.interfaces import Negatives
from recsys.losses import LOSSES, BCEConfig, BPRConfig, bce_loss, bpr_loss


def _negatives(weight: Tensor, pos_weight: Tensor) -> Negatives:
    """Negatives carrying explicit weights (``unit_weights`` False, so the weights are read)."""
    items = torch.zeros(weight.shape, dtype=torch.long)
    return Negatives(items=items, log_q=torch.zeros_like(weight), weight=weight, pos_weight=pos_weight)


def _unit(neg_scores: Tensor) -> Negatives:
    return Negatives.unweighted(torch.zeros(neg_scores.shape, dtype=torch.long), torch.zeros_like(neg_scores))


# Two positives with two negatives each, and weights that make every term count differently.
POS = torch.tensor([2.0, 0.0], dtype=torch.float64)
NEG = torch.tensor([[1.0, 3.0], [0.5, -1.0]], dtype=torch.float64)
WEIGHT = torch.tensor([[0.5, 2.0], [1.0, 0.0]], dtype=torch.float64)
POS_WEIGHT = torch.tensor([1.0, 3.0], dtype=torch.float64)


def test_bpr_one_positive_two_negatives() -> None:
    # pos 2, negs [1, 3]: mean(softplus(1 - 2), softplus(3 - 2)) = (0.3132616875 + 1.3132616875) / 2
    loss = bpr_loss(torch.tensor([2.0]), torch.tensor([[1.0, 3.0]]), _unit(torch.zeros(1, 2)))
    assert loss.item() == pytest.approx(0.8132616875, abs=1e-7)


def test_bce_one_positive_two_negatives() -> None:
    # softplus(-2) + softplus(1) + softplus(3) = 0.1269280110 + 1.3132616875 + 3.0485873516
    loss = bce_loss(torch.tensor([2.0]), torch.tensor([[1.0, 3.0]]), _unit(torch.zeros(1, 2)))
    assert loss.item() == pytest.approx(4.4887770501, abs=1e-6)


def test_bpr_reads_negative_and_positive_weights() -> None:
    # mean over the 4 pairs of weight * pos_weight * softplus(neg - pos):
    #   0.5 * 1 * softplus(-1) = 0.1566308438     2 * 1 * softplus(1)  = 2.6265233750
    #   1.0 * 3 * softplus(0.5) = 2.9222309526    0 * 3 * softplus(-1) = 0
    loss = bpr_loss(POS, NEG, _negatives(WEIGHT, POS_WEIGHT))
    assert loss.item() == pytest.approx((0.1566308438 + 2.6265233750 + 2.9222309526) / 4, abs=1e-9)
    assert loss.item() == pytest.approx(1.4263462929, abs=1e-9)


def test_bce_reads_negative_and_positive_weights() -> None:
    # positive 0: 1 * softplus(-2) + 0.5 * softplus(1) + 2 * softplus(3)  = 6.8807335579
    # positive 1: 3 * softplus(0)  + 1 * softplus(0.5) + 0 * softplus(-1) = 3.0535185259
    loss = bce_loss(POS, NEG, _negatives(WEIGHT, POS_WEIGHT))
    assert loss.item() == pytest.approx((6.8807335579 + 3.0535185259) / 2, abs=1e-9)


# Doubling every weight scales BPR by 4 (it multiplies weight by pos_weight) and BCE by 2 (it adds them).
@pytest.mark.parametrize(("loss_fn", "doubled_factor"), [(bpr_loss, 4.0), (bce_loss, 2.0)])
def test_unit_weights_fast_path_equals_explicit_ones(loss_fn, doubled_factor: float) -> None:
    generator = torch.Generator().manual_seed(0)
    pos = torch.randn(5, generator=generator)
    neg = torch.randn(5, 3, generator=generator)
    fast = loss_fn(pos, neg, _unit(neg))
    explicit = loss_fn(pos, neg, _negatives(torch.ones(5, 3), torch.ones(5)))
    assert fast.item() == pytest.approx(explicit.item(), rel=1e-6)
    # ... and the weighted path really reads the weights (else the comparison above proves nothing).
    doubled = loss_fn(pos, neg, _negatives(torch.full((5, 3), 2.0), torch.full((5,), 2.0)))
    assert doubled.item() == pytest.approx(doubled_factor * fast.item(), rel=1e-6)


@pytest.mark.parametrize("unit_weights", [True, False])
def test_large_score_gaps_stay_finite(unit_weights: bool) -> None:
    pos = torch.tensor([100.0, -100.0], requires_grad=True)
    neg = torch.tensor([[-100.0], [100.0]], requires_grad=True)
    negatives = _unit(neg.detach()) if unit_weights else _negatives(torch.ones(2, 1), torch.ones(2))
    bpr = bpr_loss(pos, neg, negatives)
    bce = bce_loss(pos, neg, negatives)
    # BPR: (softplus(-200) + softplus(200)) / 2 = 100; BCE: (0 + 0 + 100 + 100) / 2 = 100.
    assert bpr.item() == pytest.approx(100.0, rel=1e-6)
    assert bce.item() == pytest.approx(100.0, rel=1e-6)
    (bpr + bce).backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    # d/ds_pos: BPR -sigmoid(neg - pos) / 2, BCE -sigmoid(-pos) / 2 -> [0, -1]; d/ds_neg: [0, +1].
    torch.testing.assert_close(pos.grad, torch.tensor([0.0, -1.0]))
    torch.testing.assert_close(neg.grad, torch.tensor([[0.0], [1.0]]))


def test_bpr_gradient_matches_analytic() -> None:
    # L = 1/(B N) sum w_bj v_b softplus(s_bj - s_b):
    #   dL/ds_bj = w_bj v_b sigmoid(s_bj - s_b) / (B N),  dL/ds_b = -sum_j of the same.
    pos = POS.clone().requires_grad_()
    neg = NEG.clone().requires_grad_()
    bpr_loss(pos, neg, _negatives(WEIGHT, POS_WEIGHT)).backward()
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected_neg = [
        [0.5 * 1 * sigmoid(-1.0) / 4, 2.0 * 1 * sigmoid(1.0) / 4],
        [1.0 * 3 * sigmoid(0.5) / 4, 0.0],
    ]
    expected_pos = [-sum(row) for row in expected_neg]
    torch.testing.assert_close(neg.grad, torch.tensor(expected_neg, dtype=torch.float64))
    torch.testing.assert_close(pos.grad, torch.tensor(expected_pos, dtype=torch.float64))


def test_bpr_gradient_unit_weights() -> None:
    # pos 2, negs [1, 3]: dL/dneg = [sigmoid(-1), sigmoid(1)] / 2 = [0.1344707, 0.3655293]; dL/dpos = -0.5.
    pos = torch.tensor([2.0], requires_grad=True)
    neg = torch.tensor([[1.0, 3.0]], requires_grad=True)
    bpr_loss(pos, neg, _unit(neg.detach())).backward()
    torch.testing.assert_close(neg.grad, torch.tensor([[0.1344707, 0.3655293]]))
    torch.testing.assert_close(pos.grad, torch.tensor([-0.5]))


def test_bce_gradient_matches_analytic() -> None:
    # L = 1/B sum_b [v_b softplus(-s_b) + sum_j w_bj softplus(s_bj)]:
    #   dL/ds_b = -v_b sigmoid(-s_b) / B,  dL/ds_bj = w_bj sigmoid(s_bj) / B.
    pos = POS.clone().requires_grad_()
    neg = NEG.clone().requires_grad_()
    bce_loss(pos, neg, _negatives(WEIGHT, POS_WEIGHT)).backward()
    expected_pos = -POS_WEIGHT * torch.sigmoid(-POS) / 2
    expected_neg = WEIGHT * torch.sigmoid(NEG) / 2
    torch.testing.assert_close(pos.grad, expected_pos)
    torch.testing.assert_close(neg.grad, expected_neg)


def test_registry_builds_each_loss_by_name() -> None:
    assert {"bce", "bpr"} <= set(LOSSES.names())
    assert LOSSES.config_class("bpr") is BPRConfig and LOSSES.config_class("bce") is BCEConfig
    assert LOSSES.build(BPRConfig()) is bpr_loss
    assert LOSSES.build(BCEConfig()) is bce_loss
    with pytest.raises(KeyError, match="unknown loss 'hinge'"):
        LOSSES.config_class("hinge")
