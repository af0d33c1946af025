"""PureSVD of the (propensity-weighted) click matrix: Rel-MF's unbiased square loss minimised exactly."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch
from pydantic import Field
from torch import Tensor

from recsys.errors import ConfigError
from recsys.interfaces import Section
from recsys.models.base import DotProductModule, TrainingParts

__all__ = ["WeightedSVD", "WeightedSVDConfig", "soft_thresholded_svd"]


class WeightedSVDConfig(Section):
    """``model.name: weighted_svd``: fitted in closed form when training starts (one epoch is enough:
    ``train.max_epochs: 1``); the column weights are the sampler's ``pos_weight`` (``sampler.name: mnar``
    for Rel-MF's propensities, ``uniform`` for none); the loss section is not used."""

    name: Literal["weighted_svd"] = "weighted_svd"
    rank: int = Field(8, ge=1)
    reg: float = Field(0.0, ge=0)  # lambda of lambda (|P|^2 + |Q|^2): soft-thresholds the singular values


class WeightedSVD(DotProductModule):
    """Scores ``s(u, i) = p_u . q_i`` from a rank-``d`` factorisation of ``M = Y diag(w)``, ``Y`` the
    binary training clicks and ``w_i`` each positive's weight from the sampler (``1 / theta_i`` with
    ``sampler.name: mnar``; 1 otherwise), fitted in closed form.

    Why this is Rel-MF's estimator (Saito et al., WSDM 2020, Eq. 9): with the square loss on a linear
    score, ``delta1(x) = (1 - x)^2`` and ``delta0(x) = x^2``, the unbiased loss over *all* pairs is

        sum_ui (Y_ui / theta_i) (1 - x_ui)^2 + (1 - Y_ui / theta_i) x_ui^2 = sum_ui (x_ui - Y_ui / theta_i)^2 + const,

    so its minimiser over ``x = P Q^T`` of rank ``d`` with the penalty ``lambda (|P|_F^2 + |Q|_F^2)`` is
    ``U_d max(S_d - lambda, 0) V_d^T`` from the truncated SVD ``U S V^T`` of ``M`` (Eckart-Young; the
    penalty is ``2 lambda`` times the nuclear norm at the optimum, whose proximal map soft-thresholds the
    singular values). Its expectation over exposure is ``E[Y_ui / theta_i] = gamma_ui``. With every
    ``w_i = 1`` it is PureSVD (Cremonesi, Koren & Turrin, RecSys 2010), whose expectation is
    ``theta_i gamma_ui``: the popularity-biased target. Fitting every pair at once avoids what SGD with
    sampled unlabeled pairs suffers here (docs/results.md, issue 7): an estimator whose terms have
    weights up to ``1 / clip`` and a negative weight on ``delta0`` of rare positives.

    ``P = U_d sqrt(S'), Q = V_d sqrt(S')`` with ``S' = max(S_d - lambda, 0)``.

    Args:
        config: the ``model`` section.
        parts: sampler (its ``pos_weight`` weighs each training click), evaluator; the training
            interactions (``parts.train``) are required.
    """

    def __init__(self, config: WeightedSVDConfig, parts: TrainingParts) -> None:
        super().__init__(parts)
        if parts.train is None:
            raise ValueError("weighted_svd needs the training interactions")
        if config.rank >= min(parts.n_users, parts.n_items):
            raise ConfigError(
                f"model.rank: {config.rank} must be below min(users, items) = {min(parts.n_users, parts.n_items)}"
            )
        self.rank = config.rank
        self.reg = config.reg
        self.train_interactions = parts.train
        # Filled by ``fit_factors``; not parameters: nothing here is trained by gradient.
        self.register_buffer("user_factors", torch.zeros(parts.n_users, config.rank))
        self.register_buffer("item_factors", torch.zeros(parts.n_items, config.rank))
        self._fitted = False

    # -- fitting -----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if not self._fitted:
            self.fit_factors()

    @torch.no_grad()
    def fit_factors(self) -> None:
        """Factorise ``Y diag(w)`` (see the class docstring) into ``user_factors``, ``item_factors``."""
        matrix = self.weighted_clicks()
        users, values, items = soft_thresholded_svd(matrix, self.rank, self.reg, seed=0)
        scale = np.sqrt(values)
        self.user_factors.copy_(torch.from_numpy(users * scale).to(self.user_factors))
        self.item_factors.copy_(torch.from_numpy(items * scale).to(self.item_factors))
        self._fitted = True

    def weighted_clicks(self) -> sp.csr_array:
        """``[n_users, n_items]`` CSR: each training click weighted by the sampler's ``pos_weight``."""
        clicks = sp.csr_array(self.train_interactions.csr(), dtype=np.float64)
        clicks.sum_duplicates()
        clicks.data[:] = 1.0
        rows = np.repeat(np.arange(clicks.shape[0]), np.diff(clicks.indptr))
        users = torch.from_numpy(rows).to(self.device)
        items = torch.from_numpy(clicks.indices.astype(np.int64)).to(self.device)
        weights = []
        # In chunks: a sampler draws negatives along (an in-batch sampler's are [B, B - 1]).
        with self.sampler.preserved_random_state():
            for start in range(0, len(items), _CHUNK_PAIRS):
                chunk = slice(start, start + _CHUNK_PAIRS)
                drawn = self.sampler(users[chunk], items[chunk], scorer=_no_scores)
                weights.append(drawn.pos_weight.expand(len(items[chunk])).double().cpu())
        clicks.data = torch.cat(weights).numpy() if weights else clicks.data
        return clicks

    def training_step(self, batch: Any, batch_index: int) -> None:
        """Nothing to step: the factors are fitted in closed form at the start of training."""

    def configure_optimizers(self) -> None:
        return None

    # -- scoring -----------------------------------------------------------------------------------
    def query_embeddings(self, queries: Tensor) -> Tensor:
        return self.user_factors.index_select(0, queries)

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        if items is None:
            return self.item_factors
        return self.item_factors.index_select(0, items.reshape(-1)).view(*items.shape, self.rank)


_CHUNK_PAIRS = 4096  # training pairs per sampler call when reading the weights


def _no_scores(candidates: Tensor) -> Tensor:
    """A scorer for samplers that ask for one: the weights do not depend on scores."""
    return torch.zeros(candidates.shape, device=candidates.device)


def soft_thresholded_svd(matrix: sp.sparray, rank: int, reg: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``rank`` largest singular triplets of ``matrix``, values soft-thresholded by ``reg``.

    Returns:
        ``U [n_rows, rank]``, ``max(S - reg, 0) [rank]`` (descending), ``V [n_cols, rank]``.
    """
    start = np.random.default_rng(seed).uniform(size=min(matrix.shape))  # ARPACK's start: deterministic
    left, values, right_t = sla.svds(matrix, k=rank, v0=start)
    order = np.argsort(values)[::-1]
    return left[:, order], np.maximum(values[order] - reg, 0.0), right_t[order].T
