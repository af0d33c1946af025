"""NBPO's sampler: uniform negatives plus a learned probability that each is a hidden positive."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from recsys.data.interactions import Interactions
from recsys.embeddings import lookup
from recsys.interfaces import Negatives, ScoreFn, Section
from recsys.samplers.base import Sampler
from recsys.samplers.uniform import UniformSampler

__all__ = ["NoisyLabelRobustConfig", "NoisyLabelRobustSampler"]


class NoisyLabelRobustConfig(Section):
    """``sampler.name: noisy_label_robust``; train with ``loss.name: nbpo``."""

    name: Literal["noisy_label_robust"] = "noisy_label_robust"
    n_negatives: int = Field(4, ge=1)  # the paper's sample rate
    rank: int = Field(50, ge=1)  # of the flip model's factors P, Q
    flip_l2: float = Field(0.01, ge=0)  # lambda_phi
    exclude_positives: bool = True  # the official code rejects the user's training items


class NoisyLabelRobustSampler(Sampler):
    """Noisy-label-robust BPO (Yu & Qin, SIGIR 2020, Sec. 3): a flip model
    ``eps_ui = sigmoid(P_u . Q_i)`` gives the probability that the label of (u, i) was flipped: that an
    observed positive is noise, or that an unvoted item is a hidden positive. Negatives are uniform; the
    flip model is trained jointly with the recommender through the ``nbpo`` loss, which reads the flip
    logits this sampler attaches:

    - ``extras["flip_logit_positive"]`` ``[B]``: ``P_u . Q_i`` of the positives,
    - ``extras["flip_logit_negative"]`` ``[B, N]``: ``P_u . Q_j`` of the negatives,
    - ``extras["flip_l2"]`` scalar: ``lambda_phi / 2 * (|P_u|^2 + |Q_i|^2 + sum_j |Q_j|^2)`` averaged
      over the batch (L2 on the rows in the batch; the official code decays the whole matrices).

    Initialisation follows the official code (Wenhui-Yu/NBPO ``_NBPOo.py``): ``P ~ 5 U[0,1) / sqrt(r)``,
    ``Q ~ -5 U[0,1) / sqrt(r)``, so every flip probability starts near ``sigmoid(-6.25) = 0.002``.

    Args:
        uniform: the negative sampler (uniform, usually excluding positives).
        n_users: users in the id space.
        rank: factor rank ``r``.
        flip_l2: ``lambda_phi``.
        seed: generator seed.
    """

    def __init__(self, uniform: UniformSampler, n_users: int, rank: int, flip_l2: float, seed: int) -> None:
        super().__init__(uniform.n_items, seed)
        self.uniform = uniform
        self.flip_l2 = flip_l2
        self.user_flip = nn.Embedding(n_users, rank)
        self.item_flip = nn.Embedding(uniform.n_items, rank)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            scale = 5.0 / math.sqrt(rank)
            self.user_flip.weight.copy_(torch.rand(n_users, rank, generator=generator) * scale)
            self.item_flip.weight.copy_(-torch.rand(uniform.n_items, rank, generator=generator) * scale)
        # Mutated in place (no nn.Module attribute writes per step); read by diagnostics().
        self._flip_totals: dict[str, Tensor | int] = {"sum": 0.0, "count": 0}

    @classmethod
    def from_config(cls, config: NoisyLabelRobustConfig, train: Interactions, seed: int) -> NoisyLabelRobustSampler:
        positives = train.csr() if config.exclude_positives else None
        uniform = UniformSampler(train.n_items, config.n_negatives, positives, seed + 1)
        return cls(uniform, train.n_users, config.rank, config.flip_l2, seed)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        negatives = self.uniform(queries, positives, scorer)
        user = lookup(self.user_flip, queries)  # [B, r]
        item_positive = lookup(self.item_flip, positives)  # [B, r]
        item_negative = lookup(self.item_flip, negatives.items)  # [B, N, r]
        flip_positive = (user * item_positive).sum(dim=1)  # [B]
        flip_negative = (item_negative * user.unsqueeze(1)).sum(dim=2)  # [B, N]
        squares = user.pow(2).sum(1) + item_positive.pow(2).sum(1) + item_negative.pow(2).sum((1, 2))
        if self.training:  # not the diagnostics probe's draws
            totals = self._flip_totals
            totals["sum"] = totals["sum"] + torch.sigmoid(flip_negative.detach()).sum()  # stays on the device
            totals["count"] += flip_negative.numel()
        extras = {
            "flip_logit_positive": flip_positive,
            "flip_logit_negative": flip_negative,
            "flip_l2": 0.5 * self.flip_l2 * squares.mean(),
        }
        return Negatives(
            items=negatives.items, log_q=negatives.log_q, weight=negatives.weight,
            pos_weight=negatives.pos_weight, extras=extras, unit_weights=negatives.unit_weights,
        )

    def diagnostics(self) -> dict[str, float]:
        """``flip_probability``: mean ``eps`` of the training negatives drawn since the last call."""
        totals = self._flip_totals
        figures = {"flip_probability": float(totals["sum"]) / totals["count"]} if totals["count"] else {}
        totals["sum"], totals["count"] = 0.0, 0
        return figures

