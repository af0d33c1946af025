"""Matrix factorisation: one embedding per user and per item, scored by their dot product."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from recsys.embeddings import embedding_tables
from recsys.interfaces import Section
from recsys.models.base import DotProductModule, TrainingParts

__all__ = ["MFConfig", "MatrixFactorization"]


class MFConfig(Section):
    """``model.name: mf``."""

    name: Literal["mf"] = "mf"
    dim: int = Field(64, ge=1)
    init: Literal["xavier_normal", "normal"] = "xavier_normal"  # RecBole's BPR uses xavier_normal
    init_std: float = Field(0.1, gt=0)  # for init: normal


class MatrixFactorization(DotProductModule):
    """MF: ``s(u, i) = p_u . q_i`` (Koren, Bell & Volinsky, Computer 2009, Eq. 1 without biases).

    Trained with the ``bpr`` loss and uniform negatives it is BPR-MF (Rendle et al., UAI 2009);
    with any other sampler or loss, the same representation.

    Args:
        config: the ``model`` section.
        parts: sampler, loss, evaluator and optimizer settings.
    """

    def __init__(self, config: MFConfig, parts: TrainingParts) -> None:
        super().__init__(parts)
        self.user_embedding, self.item_embedding = embedding_tables(
            parts.n_users, parts.n_items, config.dim, config.init, config.init_std
        )

    def query_embeddings(self, queries: Tensor) -> Tensor:
        return self.lookup(self.user_embedding, queries)

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        return self.item_embedding.weight if items is None else self.lookup(self.item_embedding, items)
