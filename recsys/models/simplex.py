"""SimpleX: a user tower that blends the user's embedding with their aggregated history, cosine-scored."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from recsys.embeddings import embedding_table
from recsys.errors import ConfigError
from recsys.interfaces import Negatives, Section
from recsys.models.base import DotProductModule, TrainingParts
from recsys.models.history import UserHistories

__all__ = ["SimpleX", "SimpleXConfig"]


class SimpleXConfig(Section):
    """``model.name: simplex``; train it with ``loss.name: ccl`` and hundreds of negatives."""

    name: Literal["simplex"] = "simplex"
    dim: int = Field(64, ge=1)
    aggregator: Literal["mean", "user_attention", "self_attention"] = "mean"
    gamma: float = Field(0.5, ge=0, le=1)  # g: weight of the user's own embedding
    max_len: int = Field(500, ge=1)  # history cap per user
    dropout: float = Field(0.1, ge=0, lt=1)  # on the (normalised) user vector, training only
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    l2: float = Field(0.0, ge=0)  # the official "embedding_regularizer": l2/2 |E|^2 on the tables, per step
    init_std: float = Field(1e-4, gt=0)  # the official initialiser: normal(0, 1e-4)


class SimpleX(DotProductModule):
    """SimpleX (Mao et al., CIKM 2021; official code reczoo/RecZoo ``matching/cf/SimpleX``).

    User tower, Eq. 2-4: ``p_u = g e_u + (1 - g) V agg({e_j : j in H_u})`` with ``agg`` the masked
    mean, a user-attention (``a_j ~ exp(tanh(W_k e_j + b) . e_u)``) or a self-attention
    (``a_j ~ exp(tanh(W_k e_j + b) . w_q)``) weighted sum, ``V`` a bias-free linear map and
    ``H_u`` the user's training items (at most ``max_len``). During training the positive being
    predicted is left out of ``H_u``, as the official data preparation does. Score, Eq. 5: cosine,
    ``s(u, i) = p_u . e_i / (|p_u| |e_i|)``, with dropout on the normalised ``p_u`` while training.

    Differences from the official code, on purpose: the attention softmax gives padded entries
    weight 0 (the official one gives them ``exp(0)`` in the denominator).

    The tower and the normalised item table are computed once per training step (``begin_step``),
    so the positive, the negatives and the sampler's scorer see one dropout mask, and thousands of
    negatives per query gather normalised rows instead of normalising each gathered row.

    Args:
        config: the ``model`` section.
        parts: training parts; ``parts.train`` gives the histories.
    """

    def __init__(self, config: SimpleXConfig, parts: TrainingParts) -> None:
        super().__init__(parts)
        if parts.train is None:
            raise ConfigError("model.name=simplex needs the training interactions for its user histories")
        self.gamma = config.gamma
        self.aggregator = config.aggregator
        self.l2 = config.l2
        self.user_embedding = embedding_table(parts.n_users, config.dim, "normal", config.init_std)
        self.item_embedding = embedding_table(parts.n_items, config.dim, "normal", config.init_std)
        self.value = nn.Linear(config.dim, config.dim, bias=False)  # V
        if config.aggregator != "mean":
            self.key = nn.Linear(config.dim, config.dim)  # W_k, b
            self.attention_dropout = nn.Dropout(config.attention_dropout)
        if config.aggregator == "self_attention":
            self.attention_query = nn.Parameter(nn.init.xavier_normal_(torch.empty(config.dim, 1)))  # w_q
        self.histories = UserHistories(parts.train, config.max_len) if config.gamma < 1 else None
        self.dropout = nn.Dropout(config.dropout)
        self._step: tuple[Tensor, Tensor] | None = None  # (queries, p_u) of the current step
        self._items: Tensor | None = None  # the normalised item table of the current step or pass

    def user_tower(self, users: Tensor, leave_out: Tensor | None = None) -> Tensor:
        """``users [B]`` -> normalised ``p_u [B, d]`` (dropout applied in training mode).

        ``leave_out [B]``: an item per user to drop from their history (the training positive)."""
        own = self.lookup(self.user_embedding, users)  # [B, d]
        vector = own
        if self.histories is not None:
            items, rows = self.histories.flat(users)  # [T], [T]
            if leave_out is not None:
                keep = items != leave_out[rows]
                items, rows = items[keep], rows[keep]
            sequence = self.lookup(self.item_embedding, items)  # [T, d]
            pooled = self._aggregate(own, sequence, rows)
            vector = self.gamma * own + (1 - self.gamma) * self.value(pooled)
        return self.dropout(F.normalize(vector, dim=-1))

    def _aggregate(self, own: Tensor, sequence: Tensor, rows: Tensor) -> Tensor:
        """``own [B, d]``, ragged history ``sequence [T, d]`` with its ``rows [T]`` -> ``[B, d]``
        (a zero vector for an empty history)."""
        batch = own.shape[0]
        if self.aggregator == "mean":
            counts = torch.bincount(rows, minlength=batch).clamp_min(1).to(sequence.dtype)  # [B]
            weights = (1.0 / counts)[rows]  # [T]
        else:
            keys = torch.tanh(self.key(sequence))  # [T, d]
            if self.aggregator == "user_attention":
                logits = (keys * own[rows]).sum(dim=1)  # [T]
            else:
                logits = (keys @ self.attention_query).squeeze(1)  # [T]
            # Softmax within each user's entries: subtract the row maximum, normalise by the row sum.
            row_max = logits.new_full((batch,), float("-inf")).scatter_reduce(0, rows, logits, "amax")
            exp = torch.exp(logits - row_max[rows].detach())  # [T]
            totals = exp.new_zeros(batch).index_add(0, rows, exp)  # [B]
            weights = self.attention_dropout(exp / totals[rows])  # [T]
        return own.new_zeros(batch, sequence.shape[1]).index_add(0, rows, sequence * weights.unsqueeze(1))

    def begin_step(self, queries: Tensor, positives: Tensor) -> None:
        self._step = (queries, self.user_tower(queries, leave_out=positives))
        self._items = F.normalize(self.item_embedding.weight, dim=-1)

    def end_step(self) -> None:
        self._step = None
        self._items = None

    def begin_evaluation(self) -> None:
        self._items = F.normalize(self.item_embedding.weight, dim=-1)

    def end_evaluation(self) -> None:
        self._items = None

    def query_embeddings(self, queries: Tensor) -> Tensor:
        if self._step is not None and queries is self._step[0]:
            return self._step[1]
        return self.user_tower(queries)

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        table = self._items if self._items is not None else F.normalize(self.item_embedding.weight, dim=-1)
        if items is None:
            return table
        return table.index_select(0, items.reshape(-1)).view(*items.shape, table.shape[1])

    def regularization(self, queries: Tensor, positives: Tensor, negatives: Negatives) -> Tensor | float:
        if not self.l2:
            return 0.0
        tables = self.user_embedding.weight.pow(2).sum() + self.item_embedding.weight.pow(2).sum()
        return self.l2 * 0.5 * tables
