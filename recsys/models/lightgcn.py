"""LightGCN: linear propagation on the user-item graph, scored by a dot product."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from recsys.embeddings import embedding_tables
from recsys.errors import ConfigError
from recsys.interfaces import Negatives, Section
from recsys.models.base import DotProductModule, TrainingParts
from recsys.models.graph import NormalizedBipartiteGraph

__all__ = ["LightGCN", "LightGCNConfig"]


class LightGCNConfig(Section):
    """``model.name: lightgcn``; defaults are the paper's (gusye1234/LightGCN-PyTorch)."""

    name: Literal["lightgcn"] = "lightgcn"
    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0)  # K
    reg_weight: float = Field(1e-4, ge=0)  # lambda of the L2 term on the batch's layer-0 embeddings
    init: Literal["normal", "xavier_uniform"] = "normal"  # RecBole's LightGCN: xavier_uniform
    init_std: float = Field(0.1, gt=0)  # for init: normal


class LightGCN(DotProductModule):
    """LightGCN (He et al., SIGIR 2020).

    Eq. 7 in matrix form: ``E^(k+1) = A~ E^(k)`` with ``A~ = D^-1/2 A D^-1/2`` on the user-item graph
    (``NormalizedBipartiteGraph``); Eq. 8: the final embeddings are the mean over layers,
    ``E = 1/(K+1) sum_{k=0..K} E^(k)`` (the paper's alpha_k = 1/(K+1)); Eq. 6: ``s(u, i) = e_u . e_i``.
    Eq. 15's L2 term, as in the reference code: ``lambda * 1/2 (|e_u^0|^2 + |e_i^0|^2 + sum_j
    |e_j^0|^2) / B`` on the layer-0 embeddings of the batch's users, positives and negatives.

    The graph is propagated once per training step (``begin_step``; the sampler's scorer and the
    loss share it) and once per evaluation pass. Gradients reach every embedding, so they are dense.

    Args:
        config: the ``model`` section.
        parts: training parts; ``parts.train`` builds the graph.
    """

    def __init__(self, config: LightGCNConfig, parts: TrainingParts) -> None:
        super().__init__(parts)
        if parts.train is None:
            raise ConfigError("model.name=lightgcn needs the training interactions to build its graph")
        self.layers = config.layers
        self.reg_weight = config.reg_weight
        self.graph = NormalizedBipartiteGraph(parts.train)
        self.user_embedding, self.item_embedding = embedding_tables(
            parts.n_users, parts.n_items, config.dim, config.init, config.init_std
        )
        self._final: tuple[Tensor, Tensor] | None = None

    def propagate(self) -> tuple[Tensor, Tensor]:
        """Final embeddings: users ``[U, d]``, items ``[I, d]`` (mean over layers 0..K)."""
        return self.graph.layer_mean(self.user_embedding.weight, self.item_embedding.weight, self.layers)

    def _embeddings(self) -> tuple[Tensor, Tensor]:
        # Outside a step or a pass (a user's own call), propagate afresh.
        return self._final if self._final is not None else self.propagate()

    def begin_step(self, queries: Tensor, positives: Tensor) -> None:
        self._final = self.propagate()

    def end_step(self) -> None:
        self._final = None

    def begin_evaluation(self) -> None:
        self._final = self.propagate()

    def end_evaluation(self) -> None:
        self._final = None

    def query_embeddings(self, queries: Tensor) -> Tensor:
        return self._embeddings()[0].index_select(0, queries)

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        table = self._embeddings()[1]
        if items is None:
            return table
        return table.index_select(0, items.reshape(-1)).view(*items.shape, table.shape[1])

    def regularization(self, queries: Tensor, positives: Tensor, negatives: Negatives) -> Tensor | float:
        if not self.reg_weight:
            return 0.0
        users, items = self.user_embedding.weight, self.item_embedding.weight
        negative_items = negatives.items[0] if negatives.shared else negatives.items.reshape(-1)
        if len(positives) + len(negative_items) < items.shape[0]:
            # Fewer rows than the table (Gowalla: 4,096 of 40,981): square the batch's rows only.
            negative_term = items.index_select(0, negative_items).pow(2).sum()
            item_term = items.index_select(0, positives).pow(2).sum()
        else:
            # Squared norms of all rows, then gathered: a shared set of negatives (a stride-0 view) or
            # a great many per query are never expanded to [B, N, d].
            item_norms = items.pow(2).sum(dim=1)  # [I]
            negative_term = item_norms[negatives.items[0] if negatives.shared else negatives.items].sum()
            item_term = item_norms[positives].sum()
        if negatives.shared:
            negative_term = negative_term * len(queries)
        total = users.index_select(0, queries).pow(2).sum() + item_term + negative_term
        return self.reg_weight * 0.5 * total / len(queries)
