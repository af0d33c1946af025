"""Rel-MF's sampler: uniform unlabeled pairs, and positives weighted by inverse item propensity."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.errors import DataError
from recsys.interfaces import Negatives, ScoreFn, Section
from recsys.samplers.base import Sampler
from recsys.samplers.uniform import UniformSampler

__all__ = ["MNARConfig", "MNARSampler", "item_propensity", "known_propensity"]


class MNARConfig(Section):
    """``sampler.name: mnar``; train with ``loss.name: relmf``."""

    name: Literal["mnar"] = "mnar"
    n_negatives: int = Field(1, ge=1)  # unlabeled pairs per positive
    eta: float = Field(0.5, ge=0)
    clip: float = Field(0.1, gt=0, le=1)  # lower bound M of the propensity
    exclude_positives: bool = True  # unlabeled pairs are the pairs without a training positive
    # Weight of each sampled unlabeled pair. 1.0: the paper code's balanced batches (the Rel-MF that
    # reproduces its Yahoo! R3 result). None: |unlabeled pairs| / (n_negatives |positives|), the inverse
    # sampling rate, so that a batch's loss estimates Eq. 9's sum over all pairs (see MNARSampler).
    unlabeled_weight: float | None = Field(1.0, gt=0)
    # Known propensities instead of the estimate from click counts: a ``.npy`` vector of theta indexed by
    # the original item id (``recsys data synth`` writes the true ones as propensity.npy); still clipped
    # at ``clip``, ``eta`` unused. A relative path is taken from the working directory.
    propensity_file: Path | None = None
    # Ablation control: every item gets one propensity, the harmonic mean of theta over the training
    # positives, so positives weigh 1/theta on average as with the correction but equally for every item.
    # Its expected loss ranks like theta * gamma (uncorrected); what it shares with the corrected model is
    # the balance of the positive and unlabeled terms, which moves this estimator more than the bias does.
    flatten: bool = False


def item_propensity(counts: np.ndarray, eta: float, clip: float) -> np.ndarray:
    """``theta_i = clip((n_i / max_j n_j)^eta, M, 1)`` (Saito et al., WSDM 2020, Sec. 5.1 and Eq. 11)."""
    relative = counts / max(1, counts.max())
    return np.clip(np.power(relative, eta), clip, 1.0)


def known_propensity(path: Path, train: Interactions) -> np.ndarray:
    """``[n_items]`` theta of each internal item, read from a ``.npy`` vector indexed by the original item id.

    Raises:
        DataError: the file is missing, not such a vector, or has a propensity <= 0.
    """
    if not path.is_file():
        raise DataError(f"propensity_file: {path} does not exist")
    theta = np.load(path)
    original = train.item_ids.cast(int, strict=False).to_numpy()
    if theta.ndim != 1 or np.isnan(original.astype(float)).any() or original.min() < 0 or original.max() >= len(theta):
        raise DataError(f"propensity_file: {path} is not a vector over the item ids 0..{original.max()}")
    if not (theta[original] > 0).all():
        raise DataError(f"propensity_file: {path} has a propensity <= 0")
    return theta[original].astype(np.float64)


class MNARSampler(Sampler):
    """Missing-not-at-random correction of Rel-MF (Saito et al., WSDM 2020): clicks are exposure times
    relevance, exposure depends on popularity, so a click on an item with propensity ``theta_i`` stands
    for ``1 / theta_i`` relevant pairs.

    Negatives are uniform unlabeled pairs (label ``Y = 0``); each positive (``Y = 1``) carries
    ``pos_weight = 1 / theta_i`` for the ``relmf`` loss, whose unbiased estimator of the ideal loss is
    ``(Y / theta) delta1(x) + (1 - Y / theta) delta0(x)``, summed over *all* pairs. Positives are each
    visited once per epoch and unlabeled pairs subsampled (``n_negatives`` per positive, sampling rate
    ``c = n_negatives |positives| / |unlabeled|``). By default (``unlabeled_weight: 1``, the balanced
    batches of the paper's code) a sampled unlabeled pair has weight 1, so unlabeled pairs count at rate
    ``c``: the expected loss of a pair is ``gamma delta1 + (c - gamma + c' theta gamma) delta0``
    (``c' = 1 - c``), whose minimiser ``gamma / (c + c' theta gamma)`` passes 1 (saturates) wherever
    ``gamma (1 - theta) > c``. With ``unlabeled_weight: null`` each sampled pair weighs ``1 / c``, the
    expected loss is ``gamma delta1 + (1 - gamma) delta0``, minimised at ``sigmoid(x_ui) = gamma_ui``:
    unbiased, but on Yahoo! R3 and Coat it ranks worse than the balanced batches (docs/results.md: the
    weighted unlabeled term dominates the loss). ``theta`` is estimated from the training
    positives as in the paper's code (usaito/unbiased-implicit-rec-real,
    ``src/data/preprocessor.py``: ``(n_i / max n)^0.5``), or read from ``propensity_file`` when the
    propensities are known (semi-synthetic data), and clipped below at ``clip``, which bounds the
    weights by ``1 / clip`` (less variance, some bias; the paper's clipped Rel-MF).

    Args:
        uniform: the unlabeled-pair sampler.
        propensity: ``[n_items]`` clipped ``theta``.
        seed: generator seed.
        unlabeled_weight: the weight of each sampled unlabeled pair.
    """

    def __init__(self, uniform: UniformSampler, propensity: np.ndarray, seed: int, unlabeled_weight: float = 1.0) -> None:
        super().__init__(uniform.n_items, seed)
        self.uniform = uniform
        self.unlabeled_weight = unlabeled_weight
        self.register_buffer("_inverse_propensity", torch.from_numpy(1.0 / propensity).float(), persistent=False)

    @classmethod
    def from_config(cls, config: MNARConfig, train: Interactions, seed: int) -> MNARSampler:
        positives = train.csr() if config.exclude_positives else None
        uniform = UniformSampler(train.n_items, config.n_negatives, positives, seed + 1)
        weight = config.unlabeled_weight
        if weight is None:
            pairs = train.n_users * train.n_items
            unlabeled = pairs - train.csr().nnz if config.exclude_positives else pairs
            weight = unlabeled / (config.n_negatives * max(1, len(train)))
        if config.propensity_file is None:
            propensity = item_propensity(train.item_counts(), config.eta, config.clip)
        else:
            propensity = np.clip(known_propensity(config.propensity_file, train), config.clip, 1.0)
        if config.flatten:
            counts = train.item_counts()
            mean_weight = float((counts / propensity).sum() / max(1, counts.sum()))  # mean 1/theta over positives
            propensity = np.full_like(propensity, 1.0 / mean_weight)
        return cls(uniform, propensity, seed, weight)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        negatives = self.uniform(queries, positives, scorer)
        return Negatives(
            items=negatives.items,
            log_q=negatives.log_q,
            weight=negatives.weight * self.unlabeled_weight,
            pos_weight=self._inverse_propensity[positives],
            unit_weights=False,
        )

    def diagnostics(self) -> dict[str, float]:
        weights = self._inverse_propensity
        return {"mean_inverse_propensity": float(weights.mean()), "max_inverse_propensity": float(weights.max()),
                "unlabeled_weight": self.unlabeled_weight}
