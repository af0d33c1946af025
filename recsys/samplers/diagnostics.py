"""Sampler diagnostics: how hard, how often wrong, and how popular a sampler's negatives are."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.samplers.base import BoundScorer, Sampler
from recsys.samplers.positives import PositiveSet

__all__ = ["SamplerProbe"]


class SamplerProbe:
    """Measures a sampler once per epoch on a fixed sample of training pairs.

    The sampler draws negatives for the same ``n_pairs`` (user, positive) training pairs every epoch
    (without touching the random state training uses), and the current model scores them:

    - ``hardness``: ``1 -`` the mean normalised rank of the negatives among ``n_reference`` fixed random
      items (all items when there are fewer), by the model's scores: 1 when every negative outscores
      every reference item, about 0.5 for uniform negatives.
    - ``false_negative_rate``: the share of negatives that are one of the user's validation positives.
    - ``negative_popularity``: the mean number of training interactions of the negatives.

    plus whatever ``sampler.diagnostics()`` reports about itself.

    Args:
        train: training interactions (the probe pairs and the item counts).
        valid: validation interactions (the false negatives).
        n_pairs: probe pairs.
        n_reference: reference items for the rank.
        seed: seed of the probe's draws.
    """

    def __init__(
        self, train: Interactions, valid: Interactions, n_pairs: int = 2048, n_reference: int = 2048, seed: int = 0
    ) -> None:
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(train), size=min(n_pairs, len(train)), replace=False)
        self._users = torch.from_numpy(train.users[rows].astype(np.int64))
        self._positives = torch.from_numpy(train.items[rows].astype(np.int64))
        reference = rng.choice(train.n_items, size=min(n_reference, train.n_items), replace=False)
        self._reference = torch.from_numpy(np.sort(reference).astype(np.int64))
        self._item_counts = torch.from_numpy(train.item_counts())
        self._valid = PositiveSet(valid.csr())
        self._device = torch.device("cpu")

    def _to(self, device: torch.device) -> None:
        if device != self._device:
            self._users, self._positives = self._users.to(device), self._positives.to(device)
            self._reference, self._item_counts = self._reference.to(device), self._item_counts.to(device)
            self._valid = self._valid.to(device)
            self._device = device

    @torch.no_grad()
    def measure(
        self,
        sampler: Sampler,
        score: Callable[[Tensor, Tensor], Tensor],
        device: torch.device,
        score_blocks: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> dict[str, float]:
        """Diagnostics of ``sampler`` under the model's ``score(queries [P], items [P, C]) -> [P, C]``
        (and ``score_blocks``, see ``BoundScorer``)."""
        self._to(device)
        figures = dict(sampler.diagnostics())
        users, positives = self._users, self._positives
        with sampler.preserved_random_state():
            negatives = sampler(users, positives, scorer=BoundScorer(score, users, score_blocks))
        items = negatives.items  # [P, N], possibly a shared view
        negative_scores = score(users, items)  # [P, N]
        reference = self._reference.unsqueeze(0).expand(len(users), -1)  # shared: one GEMM-shaped call
        reference_scores = torch.sort(score(users, reference), dim=1).values  # [P, R]
        # Reference items scoring at or below each negative: its rank from the bottom.
        below = torch.searchsorted(reference_scores, negative_scores.contiguous(), right=True)
        figures["hardness"] = float(below.float().mean() / reference_scores.shape[1])
        figures["false_negative_rate"] = float(self._valid.contains(users.unsqueeze(1), items).float().mean())
        figures["negative_popularity"] = float(self._item_counts[items].float().mean())
        return figures
