"""Sampled softmax, NBPO and Rel-MF against hand-computed numbers, at extreme scores, and their gradients.

Values used below (``sigma`` the sigmoid, ``softplus(x) = log(1 + e^x)``):
    sigma(-1) = 0.2689414214   sigma(0.5) = 0.6224593312   sigma(1) = 0.7310585786
    sigma(2)  = 0.8807970780   sigma(3)   = 0.9525741268
    softplus(-2) = 0.1269280110   softplus(0) = 0.6931471806   softplus(0.5) = 0.9740769842
    softplus(1)  = 1.3132616875   softplus(3) = 3.0485873516
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from recsys.interfaces import Negatives
from recsys.losses import (
    LOSSES,
    NBPOLossConfig,
    RelMFConfig,
    SampledSoftmaxConfig,
    nbpo_loss,
    relmf_loss,
    sampled_softmax_loss,
)

F64 = torch.float64


def _negatives(
    weight: Tensor,
    pos_weight: Tensor,
    log_q: Tensor | None = None,
    items: Tensor | None = None,
    positives: Tensor | None = None,
    extras: dict[str, Tensor] | None = None,
) -> Negatives:
    """Negatives carrying explicit weights (``unit_weights`` False, so the weights are read)."""
    return Negatives(
        items=torch.zeros(weight.shape, dtype=torch.long) if items is None else items,
        log_q=torch.zeros_like(weight) if log_q is None else log_q,
        weight=weight,
        pos_weight=pos_weight,
        extras=extras or {},
        positives=positives,
    )


def _unit(shape: tuple[int, int], log_q: Tensor | None = None, extras: dict[str, Tensor] | None = None) -> Negatives:
    log_q = torch.zeros(shape) if log_q is None else log_q
    negatives = Negatives.unweighted(torch.zeros(shape, dtype=torch.long), log_q)
    return replace(negatives, extras=extras or {})


# Two positives with two negatives each (as in test_losses.py).
POS = torch.tensor([2.0, 0.0], dtype=F64)
NEG = torch.tensor([[1.0, 3.0], [0.5, -1.0]], dtype=F64)
WEIGHT = torch.tensor([[0.5, 2.0], [1.0, 0.0]], dtype=F64)
POS_WEIGHT = torch.tensor([1.0, 3.0], dtype=F64)

ONE_POS = torch.tensor([2.0])
ONE_NEG = torch.tensor([[1.0, 3.0]])


# --- sampled softmax -------------------------------------------------------------------------------


def test_sampled_softmax_one_positive_two_negatives() -> None:
    # log(e^2 + e^1 + e^3) - 2 = log(1 + e^-1 + e) = 1.4076059644
    loss = sampled_softmax_loss(ONE_POS, ONE_NEG, _unit((1, 2)))
    assert loss.item() == pytest.approx(1.4076059644, abs=1e-6)


def test_sampled_softmax_temperature_divides_the_scores() -> None:
    # T = 0.5: logits 4, [2, 6] -> log(1 + e^-2 + e^2) = 2.1429316285
    loss = sampled_softmax_loss(ONE_POS, ONE_NEG, _unit((1, 2)), temperature=0.5)
    assert loss.item() == pytest.approx(2.1429316285, abs=1e-6)


def test_sampled_softmax_log_q_correction() -> None:
    log_q = torch.log(torch.tensor([[0.5, 0.25]]))
    # Off by default: log_q is ignored.
    assert sampled_softmax_loss(ONE_POS, ONE_NEG, _unit((1, 2), log_q)).item() == pytest.approx(1.4076059644, abs=1e-6)
    # l_j = s_j - log q_j = [1 + log 2, 3 + log 4]: log(e^2 + 2e + 4e^3) - 2 = log(1 + 2e^-1 + 4e) = 2.5344018190
    corrected = sampled_softmax_loss(ONE_POS, ONE_NEG, _unit((1, 2), log_q), log_q_correction=True)
    assert corrected.item() == pytest.approx(2.5344018190, abs=1e-6)
    # With extras["pos_log_q"] = log 0.5 the positive's logit is 2 + log 2 as well:
    # log(2e^2 + 2e + 4e^3) - (2 + log 2) = log(1 + e^-1 + 2e) = 1.9175757956
    with_positive = _unit((1, 2), log_q, extras={"pos_log_q": torch.log(torch.tensor([0.5]))})
    assert sampled_softmax_loss(ONE_POS, ONE_NEG, with_positive, log_q_correction=True).item() == pytest.approx(
        1.9175757956, abs=1e-6
    )
    assert sampled_softmax_loss(ONE_POS, ONE_NEG, with_positive).item() == pytest.approx(1.4076059644, abs=1e-6)


def test_sampled_softmax_negative_weights_enter_the_partition_and_pos_weight_scales() -> None:
    # Row 0: log(e^2 + 0.5 e^1 + 2 e^3) - 2 = 1.8901714060
    # Row 1: log(e^0 + 1 e^0.5 + 0 e^-1) - 0 = softplus(0.5) = 0.9740769842
    # mean(1 * 1.8901714060, 3 * 0.9740769842) = 2.4062011792
    loss = sampled_softmax_loss(POS, NEG, _negatives(WEIGHT, POS_WEIGHT))
    assert loss.item() == pytest.approx(2.4062011792, abs=1e-9)


def test_sampled_softmax_weight_zero_removes_a_negative() -> None:
    removed = sampled_softmax_loss(POS[:1], NEG[:1, :1], _unit((1, 1)))
    weights = _negatives(torch.tensor([[1.0, 0.0]], dtype=F64), torch.ones(1, dtype=F64))
    zero = sampled_softmax_loss(POS[:1], NEG[:1], weights)
    assert zero.item() == pytest.approx(removed.item(), abs=1e-12)
    assert zero.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-12)


def test_sampled_softmax_masks_accidental_hits() -> None:
    # Query 0's positive 7 is its first negative (score 1), query 1's positive 4 its second (score -1).
    items = torch.tensor([[7, 2], [3, 4]])
    negatives = replace(Negatives.unweighted(items, torch.zeros(2, 2, dtype=F64)), positives=torch.tensor([7, 4]))
    # Masked: mean(log(e^2 + e^3) - 2, log(1 + e^0.5)) = mean(1.3132616875, 0.9740769842) = 1.1436693358
    masked = sampled_softmax_loss(POS, NEG, negatives, mask_accidental_hits=True)
    assert masked.item() == pytest.approx(1.1436693358, abs=1e-9)
    # Not masked: mean(1.4076059644, log(1 + e^0.5 + e^-1)) = 1.2558682849
    assert sampled_softmax_loss(POS, NEG, negatives).item() == pytest.approx(1.2558682849, abs=1e-9)
    with pytest.raises(ValueError, match="do not know their positives"):
        sampled_softmax_loss(POS, NEG, _unit((2, 2)), mask_accidental_hits=True)


def test_sampled_softmax_shared_view_equals_the_copied_negatives() -> None:
    items = torch.tensor([4, 9, 1]).unsqueeze(0).expand(3, 3)
    log_q = torch.tensor([-1.0, -2.0, -0.5]).unsqueeze(0).expand(3, 3)
    positives = torch.tensor([9, 0, 1])
    shared = replace(Negatives.unweighted(items, log_q), positives=positives)
    copied = replace(Negatives.unweighted(items.clone(), log_q.clone()), positives=positives)
    assert shared.shared and not copied.shared
    pos = torch.tensor([0.3, -0.2, 1.0])
    neg = torch.tensor([[0.1, 0.4, -0.3], [1.2, 0.0, 0.5], [-1.0, 2.0, 0.2]])
    options = dict(log_q_correction=True, mask_accidental_hits=True, temperature=0.7)
    torch.testing.assert_close(
        sampled_softmax_loss(pos, neg, shared, **options), sampled_softmax_loss(pos, neg, copied, **options)
    )


def test_sampled_softmax_unit_weights_fast_path_equals_explicit_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(4, generator=generator), torch.randn(4, 5, generator=generator)
    fast = sampled_softmax_loss(pos, neg, _unit((4, 5)), temperature=0.3)
    explicit = sampled_softmax_loss(pos, neg, _negatives(torch.ones(4, 5), torch.ones(4)), temperature=0.3)
    assert fast.item() == pytest.approx(explicit.item(), rel=1e-6)


def test_sampled_softmax_is_stable_at_large_scores() -> None:
    # Row 0: pos 1000, negs [-1000, 1000] -> log 2.  Row 1: pos -1000, negs [1000, 1000] -> 2000 + log 2.
    pos = torch.tensor([1000.0, -1000.0], requires_grad=True)
    neg = torch.tensor([[-1000.0, 1000.0], [1000.0, 1000.0]], requires_grad=True)
    loss = sampled_softmax_loss(pos, neg, _unit((2, 2)))
    assert loss.item() == pytest.approx(1000 + math.log(2), rel=1e-6)
    loss.backward()
    # softmax rows [1/2, 0, 1/2] and [0, 1/2, 1/2], divided by B = 2.
    torch.testing.assert_close(pos.grad, torch.tensor([-0.25, -0.5]))
    torch.testing.assert_close(neg.grad, torch.tensor([[0.0, 0.25], [0.25, 0.25]]))
    # Weights (log 0 = -inf included) and a small temperature stay finite too.
    pos.grad, neg.grad = None, None
    weighted = sampled_softmax_loss(
        pos, neg, _negatives(torch.tensor([[0.0, 2.0], [1.0, 0.0]]), torch.ones(2)), temperature=0.05
    )
    weighted.backward()
    assert torch.isfinite(weighted) and torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    assert neg.grad[0, 0].item() == 0.0 and neg.grad[1, 1].item() == 0.0


def test_sampled_softmax_gradient_matches_analytic() -> None:
    # z_b = [s_b / T - pos_log_q_b, s_bj / T - log_q_bj + log w_bj], p = softmax(z_b), L = 1/B sum v_b (lse z_b - z_b0):
    #   dL/ds_b = v_b (p_b0 - 1) / (B T),   dL/ds_bj = v_b p_bj / (B T)
    temperature = 0.5
    log_q = torch.tensor([[-1.0, -0.2], [-3.0, -0.7]], dtype=F64)
    pos_log_q = torch.tensor([-0.4, -1.5], dtype=F64)
    negatives = _negatives(WEIGHT, POS_WEIGHT, log_q=log_q, extras={"pos_log_q": pos_log_q})
    pos, neg = POS.clone().requires_grad_(), NEG.clone().requires_grad_()
    sampled_softmax_loss(pos, neg, negatives, log_q_correction=True, temperature=temperature).backward()
    logits = torch.cat(
        [(POS / temperature - pos_log_q).unsqueeze(1), NEG / temperature - log_q + torch.log(WEIGHT)], dim=1
    )
    p = torch.softmax(logits, dim=1)
    scale = POS_WEIGHT / (2 * temperature)
    torch.testing.assert_close(pos.grad, scale * (p[:, 0] - 1))
    torch.testing.assert_close(neg.grad, scale.unsqueeze(1) * p[:, 1:])
    assert neg.grad[1, 1].item() == 0.0  # the weight-0 negative


# --- NBPO ------------------------------------------------------------------------------------------


def _flips(positive: list[float], negative: list[list[float]], l2: float | None = None, dtype=torch.float32) -> dict:
    extras = {
        "flip_logit_positive": torch.tensor(positive, dtype=dtype),
        "flip_logit_negative": torch.tensor(negative, dtype=dtype),
    }
    if l2 is not None:
        extras["flip_l2"] = torch.tensor(l2, dtype=dtype)
    return extras


def test_nbpo_one_positive_two_negatives() -> None:
    # x_pos = 2, f_pos = -1; x_neg = [1, -1], f_neg = [0, -2]; flip_l2 = 0.25:
    #   log sigma(2)                                = -0.1269280110
    #   log(1 - eps_pos) = log sigma(1)             = -0.3132616875
    #   log(1 - sigma(1)(1 - sigma(0)))             = log(sigma(-1) + sigma(1) sigma(0))  = -0.4549641541
    #   log(1 - sigma(-1)(1 - sigma(-2)))           = log(sigma(1) + sigma(-1) sigma(-2)) = -0.2703436790
    # L = 0.1269280110 + 0.3132616875 + 0.4549641541 + 0.2703436790 + 0.25 = 1.4154975317
    negatives = _unit((1, 2), extras=_flips([-1.0], [[0.0, -2.0]], l2=0.25))
    loss = nbpo_loss(ONE_POS, torch.tensor([[1.0, -1.0]]), negatives)
    assert loss.item() == pytest.approx(1.4154975317, abs=1e-6)
    without_l2 = _unit((1, 2), extras=_flips([-1.0], [[0.0, -2.0]]))
    assert nbpo_loss(ONE_POS, torch.tensor([[1.0, -1.0]]), without_l2).item() == pytest.approx(1.1654975317, abs=1e-6)


def test_nbpo_with_no_flips_is_bce() -> None:
    # eps -> 0 (flip logits -inf in effect): the likelihoods are sigma(x) and 1 - sigma(x).
    # softplus(-2) + softplus(1) + softplus(3) = 4.4887770501
    negatives = _unit((1, 2), extras=_flips([-60.0], [[-60.0, -60.0]]))
    assert nbpo_loss(ONE_POS, ONE_NEG, negatives).item() == pytest.approx(4.4887770501, abs=1e-5)


def test_nbpo_reads_weights() -> None:
    # Row 0 (v = 1): log sigma(2) + log sigma(1)
    #               + 0.5 log(1 - sigma(1)(1 - sigma(0))) + 2 log(1 - sigma(3)(1 - sigma(0)))
    # Row 1 (v = 3): 3 (log sigma(0) + log sigma(1)) + 1 log(1 - sigma(0.5)(1 - sigma(0))) + 0
    f_pos, f_neg = [-1.0, -1.0], [[0.0, 0.0], [0.0, 0.0]]
    loss = nbpo_loss(POS, NEG, _negatives(WEIGHT, POS_WEIGHT, extras=_flips(f_pos, f_neg, dtype=F64)))
    log_sigma = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    row0 = log_sigma(2) + log_sigma(1) + 0.5 * math.log(1 - 0.7310585786 * 0.5) + 2 * math.log(1 - 0.9525741268 * 0.5)
    row1 = 3 * (log_sigma(0) + log_sigma(1)) + math.log(1 - 0.6224593312 * 0.5)
    assert loss.item() == pytest.approx(-(row0 + row1) / 2, abs=1e-9)
    assert loss.item() == pytest.approx(2.6766844633, abs=1e-9)


def test_nbpo_without_flip_logits_raises() -> None:
    with pytest.raises(ValueError, match="needs the noisy_label_robust sampler's flip logits"):
        nbpo_loss(ONE_POS, ONE_NEG, _unit((1, 2)))


def test_nbpo_is_stable_at_large_scores() -> None:
    # Positive x = 200, f = -50: log sigma(200) + log sigma(50) ~ 0.
    # Negative x = 200, f = -50: log(sigma(-200) + sigma(200) sigma(-50)) ~ -50 (a hidden positive is unlikely).
    # Negative x = -200, f = 50: log(sigma(200) + sigma(-200) sigma(50)) ~ 0.  L = 50.
    pos = torch.tensor([200.0], requires_grad=True)
    neg = torch.tensor([[200.0, -200.0]], requires_grad=True)
    extras = _flips([-50.0], [[-50.0, 50.0]])
    for tensor in extras.values():
        tensor.requires_grad_()
    loss = nbpo_loss(pos, neg, _unit((1, 2), extras=extras))
    assert loss.item() == pytest.approx(50.0, rel=1e-6)
    loss.backward()
    for grad in (pos.grad, neg.grad, extras["flip_logit_positive"].grad, extras["flip_logit_negative"].grad):
        assert torch.isfinite(grad).all()
    # dL/df of the first negative: -sigma(x) eps (1 - eps) / (sigma(-x) + sigma(x) eps) -> -(1 - eps) = -1.
    torch.testing.assert_close(extras["flip_logit_negative"].grad, torch.tensor([[-1.0, 0.0]]))


def test_nbpo_gradient_matches_analytic() -> None:
    # With eps = sigma(f) and D = sigma(-x) + sigma(x) eps for a negative, L = -1/B sum(...) + flip_l2:
    #   dL/dx_b  = -v_b sigma(-x_b) / B                       dL/df_b  = v_b sigma(f_b) / B
    #   dL/dx_bj = w_bj sigma(x) sigma(-x) (1 - eps) / (B D)  dL/df_bj = -w_bj sigma(x) eps (1 - eps) / (B D)
    f_pos = torch.tensor([-1.0, 0.5], dtype=F64)
    f_neg = torch.tensor([[0.0, -2.0], [1.0, -0.5]], dtype=F64)
    pos, neg = POS.clone().requires_grad_(), NEG.clone().requires_grad_()
    flip_pos, flip_neg = f_pos.clone().requires_grad_(), f_neg.clone().requires_grad_()
    l2 = torch.tensor(0.3, dtype=F64, requires_grad=True)
    extras = {"flip_logit_positive": flip_pos, "flip_logit_negative": flip_neg, "flip_l2": l2}
    nbpo_loss(pos, neg, _negatives(WEIGHT, POS_WEIGHT, extras=extras)).backward()
    sigma = torch.sigmoid
    eps = sigma(f_neg)
    denominator = sigma(-NEG) + sigma(NEG) * eps
    torch.testing.assert_close(pos.grad, -POS_WEIGHT * sigma(-POS) / 2)
    torch.testing.assert_close(flip_pos.grad, POS_WEIGHT * sigma(f_pos) / 2)
    torch.testing.assert_close(neg.grad, WEIGHT * sigma(NEG) * sigma(-NEG) * (1 - eps) / (2 * denominator))
    torch.testing.assert_close(flip_neg.grad, -WEIGHT * sigma(NEG) * eps * (1 - eps) / (2 * denominator))
    assert l2.grad.item() == 1.0


# --- Rel-MF ----------------------------------------------------------------------------------------


def test_relmf_log_form_by_hand() -> None:
    # Positives: 1 * softplus(-2) + 0 * softplus(2)   = 0.1269280110
    #            3 * softplus(0)  + (1 - 3) softplus(0) = 0.6931471806
    # Negatives: 0.5 softplus(1) + 2 softplus(3) + 1 softplus(0.5) + 0 = 7.7278825311
    # L = 8.5479577227 / (B (1 + N)) = 8.5479577227 / 6 = 1.4246596204
    loss = relmf_loss(POS, NEG, _negatives(WEIGHT, POS_WEIGHT))
    assert loss.item() == pytest.approx(1.4246596204, abs=1e-9)


def test_relmf_square_form_by_hand() -> None:
    # Positives: 1 (1 - sigma(2))^2 + 0                 = 0.0142093366
    #            3 (1 - sigma(0))^2 - 2 sigma(0)^2      = 0.75 - 0.5 = 0.25
    # Negatives: 0.5 sigma(1)^2 + 2 sigma(3)^2 + sigma(0.5)^2 = 0.2672233 + 1.8147946 + 0.3874557 = 2.4694739
    # L = 2.7336832 / 6 = 0.4556138687
    loss = relmf_loss(POS, NEG, _negatives(WEIGHT, POS_WEIGHT), form="square")
    assert loss.item() == pytest.approx(0.4556138687, abs=1e-9)


def test_relmf_with_unit_weights_is_the_mean_pairwise_bce() -> None:
    # (softplus(-2) + softplus(-0) + softplus(1) + softplus(3) + softplus(0.5) + softplus(-1)) / 6 = 1.0782104837
    loss = relmf_loss(POS.float(), NEG.float(), _unit((2, 2)))
    assert loss.item() == pytest.approx(1.0782104837, abs=1e-6)


def test_relmf_is_stable_at_large_scores() -> None:
    # v = [2, 1], pos [100, -100], negs [[100], [100]]:
    # log: (2 * 0 - 1 * 100) + (100 + 0) + (100 + 100) = 200, / 4 = 50
    # square: (0 - 1) + (1 - 0) + (1 + 1) = 2, / 4 = 0.5
    pos = torch.tensor([100.0, -100.0], requires_grad=True)
    neg = torch.tensor([[100.0], [100.0]], requires_grad=True)
    negatives = _negatives(torch.ones(2, 1), torch.tensor([2.0, 1.0]))
    log_form = relmf_loss(pos, neg, negatives)
    square_form = relmf_loss(pos, neg, negatives, form="square")
    assert log_form.item() == pytest.approx(50.0, rel=1e-6)
    assert square_form.item() == pytest.approx(0.5, rel=1e-6)
    (log_form + square_form).backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()


@pytest.mark.parametrize("form", ["log", "square"])
def test_relmf_gradient_matches_analytic(form: str) -> None:
    # log:    d delta1 = -sigma(-x),           d delta0 = sigma(x)
    # square: d delta1 = -2 sigma (1 - sigma)^2, d delta0 = 2 sigma^2 (1 - sigma)
    # dL/dx_b = (v d delta1 + (1 - v) d delta0)(x_b) / 6,  dL/dx_bj = w d delta0(x_bj) / 6
    pos, neg = POS.clone().requires_grad_(), NEG.clone().requires_grad_()
    relmf_loss(pos, neg, _negatives(WEIGHT, POS_WEIGHT), form=form).backward()
    sigma = torch.sigmoid
    if form == "log":
        d1, d0 = lambda x: -sigma(-x), sigma  # noqa: E731
    else:
        d1 = lambda x: -2 * sigma(x) * (1 - sigma(x)) ** 2  # noqa: E731
        d0 = lambda x: 2 * sigma(x) ** 2 * (1 - sigma(x))  # noqa: E731
    torch.testing.assert_close(pos.grad, (POS_WEIGHT * d1(POS) + (1 - POS_WEIGHT) * d0(POS)) / 6)
    torch.testing.assert_close(neg.grad, WEIGHT * d0(NEG) / 6)


# --- the registry binds options --------------------------------------------------------------------


def test_registry_binds_sampled_softmax_options() -> None:
    assert LOSSES.config_class("sampled_softmax") is SampledSoftmaxConfig
    cooled = LOSSES.build(SampledSoftmaxConfig(temperature=0.5))
    assert cooled(ONE_POS, ONE_NEG, _unit((1, 2))).item() == pytest.approx(2.1429316285, abs=1e-6)
    plain = LOSSES.build(SampledSoftmaxConfig())
    assert plain(ONE_POS, ONE_NEG, _unit((1, 2))).item() == pytest.approx(1.4076059644, abs=1e-6)
    corrected = LOSSES.build(SampledSoftmaxConfig(log_q_correction=True))
    log_q = torch.log(torch.tensor([[0.5, 0.25]]))
    assert corrected(ONE_POS, ONE_NEG, _unit((1, 2), log_q)).item() == pytest.approx(2.5344018190, abs=1e-6)
    masking = LOSSES.build(SampledSoftmaxConfig(mask_accidental_hits=True))
    hits = replace(Negatives.unweighted(torch.tensor([[7, 2]]), torch.zeros(1, 2)), positives=torch.tensor([7]))
    # Masks the score-1 negative: log(e^2 + e^3) - 2 = softplus(1)
    assert masking(ONE_POS, ONE_NEG, hits).item() == pytest.approx(1.3132616875, abs=1e-6)


def test_registry_binds_relmf_form_and_returns_nbpo() -> None:
    square = LOSSES.build(RelMFConfig(form="square"))
    assert square(POS, NEG, _negatives(WEIGHT, POS_WEIGHT)).item() == pytest.approx(0.4556138687, abs=1e-9)
    assert LOSSES.build(RelMFConfig())(POS, NEG, _negatives(WEIGHT, POS_WEIGHT)).item() == pytest.approx(
        1.4246596204, abs=1e-9
    )
    assert LOSSES.build(NBPOLossConfig()) is nbpo_loss
    with pytest.raises(ValueError):
        RelMFConfig(form="cube")
    with pytest.raises(ValueError):
        SampledSoftmaxConfig(temperature=0.0)
