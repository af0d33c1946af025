"""Popularity-biased negatives: p(i) proportional to count(i)^alpha."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.interfaces import Negatives, ScoreFn, Section
from recsys.samplers.base import Sampler
from recsys.samplers.positives import PositiveSet

__all__ = ["PopularityConfig", "PopularitySampler", "alias_table"]

# Rounds of redrawing negatives that hit a positive before giving up on a batch (each round keeps a
# draw with probability 1 - p(positives of the user), so this is only reached when that is ~0).
_MAX_REJECTION_ROUNDS = 1000


class PopularityConfig(Section):
    """``sampler.name: popularity``. alpha 0.75: word2vec's unigram^3/4; 1: RecBole's popularity;
    0: uniform."""

    name: Literal["popularity"] = "popularity"
    n_negatives: int = Field(1, ge=1)
    alpha: float = Field(0.75, ge=0)
    exclude_positives: bool = False


class PopularitySampler(Sampler):
    """Negatives with ``p(i) = count(i)^alpha / sum_j count(j)^alpha`` (Mikolov et al., NeurIPS 2013,
    Sec. 2.2 for alpha = 3/4), ``count`` the item's training interactions.

    Draws use Walker's alias method (Vose's construction): one uniform slot and one uniform coin per
    draw, exact and O(1), so a batch costs a few vectorised gathers. With ``exclude_positives`` a draw
    that hits one of the user's training items is redrawn (rejection keeps the distribution exact:
    ``p(i) / (1 - P_u)`` over the user's non-positives, ``P_u`` the mass of their positives), and
    ``log_q`` is that probability's log. Items never interacted with have probability 0 unless
    ``alpha = 0``.

    Args:
        counts: ``[n_items]`` training interactions per item.
        n_negatives: ``N``, negatives per query.
        alpha: popularity exponent.
        seed: generator seed.
        train: the training interactions, when positives are excluded.
    """

    def __init__(
        self, counts: np.ndarray, n_negatives: int, alpha: float, seed: int, train: Interactions | None = None
    ) -> None:
        super().__init__(len(counts), seed)
        self.n_negatives = n_negatives
        weights = np.power(counts.astype(np.float64), alpha)  # 0 ** 0 == 1: alpha 0 is uniform
        if weights.sum() <= 0:
            raise ConfigError("sampler: no item has a positive popularity weight")
        probability = weights / weights.sum()
        keep, alias = alias_table(probability)
        self.register_buffer("_keep", torch.from_numpy(keep.astype(np.float32)), persistent=False)
        self.register_buffer("_alias", torch.from_numpy(alias), persistent=False)
        with np.errstate(divide="ignore"):
            log_probability = np.log(probability)
        self.register_buffer("_log_p", torch.from_numpy(log_probability.astype(np.float32)), persistent=False)
        self.positives: PositiveSet | None = None
        if train is not None:
            self.positives = PositiveSet(train.csr())
            mass = np.bincount(train.users, weights=probability[train.items], minlength=train.n_users)
            free = 1.0 - mass
            if (free <= 1e-12).any():
                user = int(np.argmax(free <= 1e-12))
                raise ConfigError(
                    f"sampler.exclude_positives: user {user}'s positives hold all the popularity mass"
                )
            self.register_buffer("_log_free", torch.from_numpy(np.log(free).astype(np.float32)), persistent=False)

    @classmethod
    def from_config(cls, config: PopularityConfig, train: Interactions, seed: int) -> PopularitySampler:
        return cls(
            train.item_counts(), config.n_negatives, config.alpha, seed,
            train if config.exclude_positives else None,
        )

    def draw(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
        """``shape`` long item ids from ``p`` (no exclusion)."""
        slot = torch.randint(self.n_items, shape, generator=generator, device=device)
        coin = torch.rand(shape, generator=generator, device=device)
        return torch.where(coin < self._keep[slot], slot, self._alias[slot])

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        generator = self.generator(queries.device)
        shape = (queries.shape[0], self.n_negatives)
        items = self.draw(shape, generator, queries.device)
        log_q = self._log_p[items]
        if self.positives is None:
            return Negatives.unweighted(items, log_q)
        users = queries.unsqueeze(1).expand(shape)
        rejected = self.positives.contains(users, items)
        for _ in range(_MAX_REJECTION_ROUNDS):
            if not bool(rejected.any()):
                break
            redrawn = self.draw((int(rejected.sum()),), generator, queries.device)
            items[rejected] = redrawn
            rejected[rejected.clone()] = self.positives.contains(users[rejected], redrawn)
        else:
            raise RuntimeError("popularity sampler: could not draw a non-positive after many rounds")
        return Negatives.unweighted(items, self._log_p[items] - self._log_free[queries].unsqueeze(1))


def alias_table(probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table by Vose's method: draw slot ``s`` uniformly, keep it with probability
    ``keep[s]``, else take ``alias[s]``.

    Args:
        probability: ``[n]`` non-negative, summing to 1.

    Returns:
        keep ``[n]`` float64 in [0, 1], alias ``[n]`` int64.
    """
    n = len(probability)
    scaled = probability * n
    keep = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    small = list(np.flatnonzero(scaled < 1.0))
    large = list(np.flatnonzero(scaled >= 1.0))
    # Built once per run (not per step); Vose's pairing is inherently sequential.
    while small and large:
        low, high = small.pop(), large.pop()
        keep[low] = scaled[low]
        alias[low] = high
        scaled[high] -= 1.0 - scaled[low]
        (small if scaled[high] < 1.0 else large).append(high)
    for leftover in small + large:  # rounding residue: these slots are (numerically) full
        keep[leftover] = 1.0
    return keep, alias
