"""Losses: pure functions ``(pos_scores [B], neg_scores [B, N], negatives) -> scalar``.

Each reads the sampler's weights (``negatives.weight [B, N]``, ``negatives.pos_weight [B]``), so a
debiasing sampler needs no loss of its own to reweight. ``loss.name`` picks one from ``LOSSES``.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from recsys.interfaces import Loss, Negatives, Section
from recsys.registry import Component, Registry

__all__ = ["BCEConfig", "BPRConfig", "LOSSES", "bce_loss", "bpr_loss"]


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


def _plain(function: Loss, config: Section) -> Loss:
    return function


LOSSES: Registry[Loss] = Registry(
    "loss",
    {
        "bpr": Component(BPRConfig, partial(_plain, bpr_loss)),
        "bce": Component(BCEConfig, partial(_plain, bce_loss)),
    },
)
