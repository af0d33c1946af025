"""Losses: pure functions ``(pos_scores [B], neg_scores [B, N], negatives) -> scalar``.

Each reads the sampler's weights (``negatives.weight [B, N]``, ``negatives.pos_weight [B]``), so a
debiasing sampler needs no loss of its own to reweight. ``loss.name`` picks one from ``LOSSES``.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from recsys.interfaces import Loss, Negatives, Section
from recsys.registry import Component, Registry

__all__ = [
    "BCEConfig",
    "BPRConfig",
    "CCLConfig",
    "LOSSES",
    "NBPOLossConfig",
    "RelMFConfig",
    "SampledSoftmaxConfig",
    "bce_loss",
    "bpr_loss",
    "ccl_loss",
    "nbpo_loss",
    "relmf_loss",
    "sampled_softmax_loss",
]


class BPRConfig(Section):
    """``loss.name: bpr``."""

    name: Literal["bpr"] = "bpr"


class BCEConfig(Section):
    """``loss.name: bce``."""

    name: Literal["bce"] = "bce"


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor, negatives: Negatives) -> Tensor:
    """Bayesian Personalized Ranking (Rendle et al., UAI 2009, Eq. 4 without the prior term).

    ``L = mean_{b, j} w_bj * v_b * -log sigmoid(s_b - s_bj)`` over the ``B x N`` (positive, negative)
    pairs, with ``w`` = ``negatives.weight`` and ``v`` = ``negatives.pos_weight``. ``-log sigmoid(x)``
    is computed as ``softplus(-x)``, exact where ``log(sigmoid(x))`` underflows.
    """
    pair_loss = F.softplus(neg_scores - pos_scores.unsqueeze(1))  # [B, N]
    if negatives.unit_weights:
        return pair_loss.mean()
    pair_weight = negatives.weight * negatives.pos_weight.unsqueeze(1)  # [B, N]
    return (pair_weight * pair_loss).mean()


def bce_loss(pos_scores: Tensor, neg_scores: Tensor, negatives: Negatives) -> Tensor:
    """Binary cross-entropy of each positive (label 1) and its ``N`` negatives (label 0).

    ``L = mean_b [ v_b * -log sigmoid(s_b) + sum_j w_bj * -log(1 - sigmoid(s_bj)) ]``: the negative
    log-likelihood of one positive and its negatives, averaged over positives (SASRec's loss for N = 1).
    """
    if negatives.unit_weights:
        return (F.softplus(-pos_scores) + F.softplus(neg_scores).sum(dim=1)).mean()
    positive_term = negatives.pos_weight * F.softplus(-pos_scores)  # [B]
    negative_term = (negatives.weight * F.softplus(neg_scores)).sum(dim=1)  # [B]
    return (positive_term + negative_term).mean()


class SampledSoftmaxConfig(Section):
    """``loss.name: sampled_softmax``."""

    name: Literal["sampled_softmax"] = "sampled_softmax"
    log_q_correction: bool = False  # subtract each negative's log_q from its logit (Yi et al.)
    mask_accidental_hits: bool = False  # drop negatives that equal the query's positive
    temperature: float = Field(1.0, gt=0)


def sampled_softmax_loss(
    pos_scores: Tensor,
    neg_scores: Tensor,
    negatives: Negatives,
    log_q_correction: bool = False,
    mask_accidental_hits: bool = False,
    temperature: float = 1.0,
) -> Tensor:
    """Listwise cross-entropy of the positive against its negatives (sampled softmax; Jean et al.,
    ACL 2015, Eq. 11; TRON's loss, Wilm et al., RecSys 2023).

    With logits ``l_b = s_b / T`` and ``l_bj = s_bj / T``:
    ``L = mean_b v_b * [ -l_b + log(exp(l_b) + sum_j w_bj exp(l_bj)) ]``.

    - ``log_q_correction``: ``l_bj -= log_q_bj`` (Yi et al., RecSys 2019, Eq. 3: ``s - log p``), and
      the positive's logit likewise when the sampler gives ``extras["pos_log_q"]``.
    - ``mask_accidental_hits``: negatives equal to the query's own positive get weight 0.
    - per-negative weights ``w`` scale their terms in the partition sum (0 removes a negative).

    TRON uses neither correction nor masking (otto-de/TRON ``src/shared/loss.py``).
    """
    positive_logit = pos_scores / temperature  # [B]
    negative_logits = neg_scores / temperature  # [B, N]
    if log_q_correction:
        negative_logits = negative_logits - negatives.log_q
        if "pos_log_q" in negatives.extras:
            positive_logit = positive_logit - negatives.extras["pos_log_q"]
    if not negatives.unit_weights:
        negative_logits = negative_logits + torch.log(negatives.weight)
    if mask_accidental_hits:
        negative_logits = negative_logits.masked_fill(negatives.accidental_hits(), float("-inf"))
    logits = torch.cat([positive_logit.unsqueeze(1), negative_logits], dim=1)  # [B, 1 + N]
    per_query = torch.logsumexp(logits, dim=1) - positive_logit  # [B]
    if negatives.unit_weights:
        return per_query.mean()
    return (negatives.pos_weight * per_query).mean()


class NBPOLossConfig(Section):
    """``loss.name: nbpo``; needs ``sampler.name: noisy_label_robust``."""

    name: Literal["nbpo"] = "nbpo"


def nbpo_loss(pos_scores: Tensor, neg_scores: Tensor, negatives: Negatives) -> Tensor:
    """Noisy-label-robust BPO (Yu & Qin, SIGIR 2020; the "original loss" of Wenhui-Yu/NBPO ``_NBPOo.py``).

    With ``sigma`` the sigmoid, model scores ``x`` and flip probabilities ``eps = sigma(f)`` from the
    ``noisy_label_robust`` sampler, an observed positive has likelihood ``sigma(x)(1 - eps)`` and an
    unvoted item ``1 - sigma(x) + sigma(x) eps``. The loss is the negative log-likelihood, averaged over
    the batch's positives:
    ``L = -mean_b [ v_b (log sigma(x_b) + log(1 - eps_b)) + sum_j w_bj log(1 - sigma(x_bj)(1 - eps_bj)) ]``
    plus the flip model's L2 term. Computed in log space: ``log(1 - eps) = log sigma(-f)`` and
    ``log(sigma(-x) + sigma(x) eps) = logaddexp(log sigma(-x), log sigma(x) + log sigma(f))``.
    (The official code adds the positive's term once per negative; here it counts once per positive.)
    """
    if "flip_logit_positive" not in negatives.extras:
        raise ValueError("the nbpo loss needs the noisy_label_robust sampler's flip logits")
    flip_positive = negatives.extras["flip_logit_positive"]  # [B]
    flip_negative = negatives.extras["flip_logit_negative"]  # [B, N]
    positive_term = F.logsigmoid(pos_scores) + F.logsigmoid(-flip_positive)  # [B]
    negative_term = torch.logaddexp(
        F.logsigmoid(-neg_scores), F.logsigmoid(neg_scores) + F.logsigmoid(flip_negative)
    )  # [B, N]
    if not negatives.unit_weights:
        positive_term = negatives.pos_weight * positive_term
        negative_term = negatives.weight * negative_term
    log_likelihood = (positive_term + negative_term.sum(dim=1)).mean()
    return -log_likelihood + negatives.extras.get("flip_l2", 0.0)


class RelMFConfig(Section):
    """``loss.name: relmf``; with ``sampler.name: mnar`` it is Rel-MF (other samplers: weights 1)."""

    name: Literal["relmf"] = "relmf"
    form: Literal["log", "square"] = "log"


def relmf_loss(pos_scores: Tensor, neg_scores: Tensor, negatives: Negatives, form: str = "log") -> Tensor:
    """Unbiased estimator of the ideal pointwise loss (Saito et al., WSDM 2020, Eq. 9).

    Positives have ``Y = 1`` and weight ``v = 1 / theta`` (``negatives.pos_weight``, from the ``mnar``
    sampler); sampled unlabeled pairs have ``Y = 0``:
    ``L = [ sum_b (v_b delta1(x_b) + (1 - v_b) delta0(x_b)) + sum_bj w_bj delta0(x_bj) ] / (B (1 + N))``,
    the mean over all pairs. ``form: log``: ``delta1 = -log sigma(x)``, ``delta0 = -log(1 - sigma(x))``;
    ``form: square``: ``delta1 = (1 - sigma(x))^2``, ``delta0 = sigma(x)^2`` (the paper's code,
    usaito/unbiased-implicit-rec-real ``src/models/recommenders.py``). For ``v > 1`` the positive's
    ``delta0`` term has a negative weight: that is what removes the exposure bias, and why the
    propensity is clipped.
    """
    if form == "log":
        delta1_positive, delta0_positive = F.softplus(-pos_scores), F.softplus(pos_scores)
        delta0_negative = F.softplus(neg_scores)
    else:
        probability_positive, probability_negative = torch.sigmoid(pos_scores), torch.sigmoid(neg_scores)
        delta1_positive, delta0_positive = (1 - probability_positive) ** 2, probability_positive**2
        delta0_negative = probability_negative**2
    weight = negatives.pos_weight  # [B]
    positive_term = weight * delta1_positive + (1 - weight) * delta0_positive  # [B]
    negative_term = delta0_negative if negatives.unit_weights else negatives.weight * delta0_negative
    pairs = neg_scores.shape[0] * (1 + neg_scores.shape[1])
    return (positive_term.sum() + negative_term.sum()) / pairs


class CCLConfig(Section):
    """``loss.name: ccl`` (SimpleX's cosine contrastive loss)."""

    name: Literal["ccl"] = "ccl"
    margin: float = Field(0.9, ge=-1, le=1)  # m
    negative_weight: float | None = Field(None, gt=0)  # w; None sums the negatives' terms (w = N)


def ccl_loss(
    pos_scores: Tensor, neg_scores: Tensor, negatives: Negatives, margin: float = 0.9,
    negative_weight: float | None = None,
) -> Tensor:
    """Cosine contrastive loss (Mao et al., CIKM 2021, Eq. 1).

    ``L = mean_b [ v_b (1 - s_b) + (w / N) sum_j w_bj max(0, s_bj - m) ]`` for cosine scores ``s``,
    with ``v`` = ``negatives.pos_weight``, ``w_bj`` = ``negatives.weight``; without
    ``negative_weight`` the negatives' terms are summed (``w = N``), as the official code does.
    Only negatives more similar than the margin ``m`` contribute.
    """
    positive_term = 1.0 - pos_scores  # [B]; 1 - cos >= 0 always (the official relu(1 - s))
    negative_terms = torch.relu(neg_scores - margin)  # [B, N]
    if not negatives.unit_weights:
        positive_term = negatives.pos_weight * positive_term
        negative_terms = negatives.weight * negative_terms
    negative_term = negative_terms.sum(dim=1)  # [B]
    if negative_weight is not None:
        negative_term = negative_term * (negative_weight / neg_scores.shape[1])
    return (positive_term + negative_term).mean()


def _plain(function: Loss, config: Section) -> Loss:
    return function


def _configured(function, config: Section) -> Loss:
    """The loss with the config's options (everything but ``name``) bound."""
    options = config.model_dump(exclude={"name"})
    return partial(function, **options)


LOSSES: Registry[Loss] = Registry(
    "loss",
    {
        "bpr": Component(BPRConfig, partial(_plain, bpr_loss)),
        "bce": Component(BCEConfig, partial(_plain, bce_loss)),
        "ccl": Component(CCLConfig, partial(_configured, ccl_loss)),
        "sampled_softmax": Component(SampledSoftmaxConfig, partial(_configured, sampled_softmax_loss)),
        "nbpo": Component(NBPOLossConfig, partial(_plain, nbpo_loss)),
        "relmf": Component(RelMFConfig, partial(_configured, relmf_loss)),
    },
)
