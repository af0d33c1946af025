"""SimpleX: a user tower that blends the user's embedding with their aggregated history, cosine-scored."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from recsys.embeddings import embedding_tables
from recsys.errors import ConfigError
from recsys.interfaces import Negatives, Section
from recsys.models.base import DotProductModule, TrainingParts
from recsys.models.history import UserHistories
from recsys.models.sparse import SparseMatrix
from recsys.models.whole_table import normalize_rows, squared_norm

__all__ = ["SimpleX", "SimpleXConfig"]


class SimpleXConfig(Section):
    """``model.name: simplex``; train it with ``loss.name: ccl`` and hundreds of negatives."""

    name: Literal["simplex"] = "simplex"
    dim: int = Field(64, ge=1)
    aggregator: Literal["mean", "user_attention", "self_attention"] = "mean"
    gamma: float = Field(0.5, ge=0, le=1)  # g: weight of the user's own embedding
    max_len: int = Field(500, ge=1)  # history cap per user
    dropout: float = Field(0.1, ge=0, lt=1)  # on the (normalised) user vector, training only
    l2: float = Field(0.0, ge=0)  # the official "embedding_regularizer": l2/2 |E|^2 on the tables, per step
    init_std: float = Field(1e-4, gt=0)  # the official initialiser: normal(0, 1e-4)
    # The official code's attention over a history padded to this many slots: its softmax counts
    # exp(0) for each padded slot in the denominator. Null: padding gets no weight (the paper's Eq. 3).
    padded_length: int | None = Field(None, ge=1)


class SimpleX(DotProductModule):
    """SimpleX (Mao et al., CIKM 2021; official code reczoo/RecZoo ``matching/cf/SimpleX``).

    User tower, Eq. 2-4: ``p_u = g e_u + (1 - g) V agg({e_j : j in H_u})`` with ``agg`` the masked
    mean, a user-attention (``a_j ~ exp(tanh(W_k e_j + b) . e_u)``) or a self-attention
    (``a_j ~ exp(tanh(W_k e_j + b) . w_q)``) weighted sum, ``V`` a bias-free linear map and
    ``H_u`` the user's training items (at most ``max_len``). During training the positive being
    predicted is left out of ``H_u``, as the official data preparation does. Score, Eq. 5: cosine,
    ``s(u, i) = p_u . e_i / (|p_u| |e_i|)``, with dropout on the normalised ``p_u`` while training.

    Computed without padding: each distinct user of the batch aggregates their whole history once
    (the mean for all users at once, as a product with the row-normalised history matrix), and the
    positive is left out per query by subtracting its term, ``(S_u - a_i e_i) / (Z_u - a_i)`` with
    ``S_u = sum_j a_j e_j``, ``Z_u = sum_j a_j`` (``a_j = 1`` for the mean). Differences from the official
    code, on purpose: by default the attention softmax gives padding no weight, where the official one
    (``BehaviorAggregator.masked_softmax``) fills padded logits with 0 and so counts ``exp(0)`` per padded
    slot in its denominator; ``padded_length`` gives that denominator, ``Z_u + (L - n_u) exp(-m_u)`` for
    a history of ``n_u`` items padded to ``L``. There is no dropout on the attention weights (0 in all
    the official configs).

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
        if config.padded_length is not None and config.aggregator == "mean":
            # The official mean pooling divides by the number of real items: padding never counts there.
            raise ConfigError("model.padded_length: is for the attention aggregators; the official mean "
                              "pooling does not count padding")
        self.padded_length = config.padded_length
        self.user_embedding, self.item_embedding = embedding_tables(
            parts.n_users, parts.n_items, config.dim, "normal", config.init_std
        )
        self.value = nn.Linear(config.dim, config.dim, bias=False)  # V
        if config.aggregator != "mean":
            self.key = nn.Linear(config.dim, config.dim)  # W_k, b
        if config.aggregator == "self_attention":
            self.attention_query = nn.Parameter(nn.init.xavier_normal_(torch.empty(config.dim, 1)))  # w_q
        self.histories = UserHistories(parts.train, config.max_len) if config.gamma < 1 else None
        if self.histories is not None and config.aggregator == "mean":
            self.history_mean = SparseMatrix(self.histories.mean_matrix())
        self.dropout = nn.Dropout(config.dropout)
        self._step: tuple[Tensor, Tensor] | None = None  # (queries, p_u) of the current step
        self._items: Tensor | None = None  # the normalised item table of the current step or pass

    def user_tower(self, users: Tensor, leave_out: Tensor | None = None) -> Tensor:
        """``users [B]`` -> normalised ``p_u [B, d]`` (dropout applied in training mode).

        ``leave_out [B]``: an item per user to drop from their history (the training positive)."""
        own = self.lookup(self.user_embedding, users)  # [B, d]
        if self.histories is None:
            return self.dropout(F.normalize(own, dim=-1))
        if self.aggregator == "mean":
            total, weight = self._mean_terms(users)
            shift = None
        else:
            total, weight, shift = self._attention_terms(users, own)
        n_items = self.histories.lengths[users].to(own.dtype)  # [B]
        if leave_out is not None:
            # Remove the positive's own term where it is in the history (it is unless truncated away).
            item = self.lookup(self.item_embedding, leave_out)  # [B, d]
            held = self.histories.contains(users, leave_out).to(own.dtype)  # [B]
            item_weight = self._weight_of(item, own, shift) * held
            total = total - item_weight.unsqueeze(1) * item
            weight = weight - item_weight
            n_items = n_items - held
        if self.padded_length is not None:
            # Each padded slot's logit is 0: exp(0 - m_u) in the shifted sum (shift is detached, so the
            # ratio a_j / Z_u is exactly the official exp(logit_j) / (sum_k exp(logit_k) + padding)).
            weight = weight + (self.padded_length - n_items).clamp_min(0) * torch.exp(-shift)
        # An empty history (or one that held only the positive) pools to a zero vector.
        pooled = total / weight.clamp_min(1e-12).unsqueeze(1) * (weight > 1e-6).unsqueeze(1)
        vector = self.gamma * own + (1 - self.gamma) * self.value(pooled)
        return self.dropout(F.normalize(vector, dim=-1))

    def _mean_terms(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """``S_u [B, d]`` and ``Z_u [B]`` of the mean: the history sum and length."""
        means = self.history_mean.matmul(self.item_embedding.weight)  # [U, d], every user at once
        lengths = self.histories.lengths[users].to(means.dtype)  # [B]
        return means.index_select(0, users) * lengths.unsqueeze(1), lengths

    def _attention_terms(self, users: Tensor, own: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``S_u = sum_j a_j e_j`` ``[B, d]``, ``Z_u = sum_j a_j`` ``[B]`` and ``m_u`` ``[B]``, with
        ``a_j = exp(logit_j - m_u)``, ``m_u`` the user's largest logit, over each distinct user's history."""
        distinct, inverse = torch.unique(users, return_inverse=True)  # [V], [B]
        items, rows = self.histories.flat(distinct)  # [T], [T]
        sequence = self.lookup(self.item_embedding, items)  # [T, d]
        distinct_own = self.lookup(self.user_embedding, distinct)  # [V, d]
        logits = self._logits(sequence, distinct_own[rows])  # [T]
        top = logits.detach().new_full((len(distinct),), float("-inf")).scatter_reduce(0, rows, logits.detach(), "amax")
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # an empty history: any finite shift
        weights = torch.exp(logits - top[rows])  # [T]
        totals = sequence.new_zeros(len(distinct), sequence.shape[1]).index_add(0, rows, sequence * weights.unsqueeze(1))
        norms = weights.new_zeros(len(distinct)).index_add(0, rows, weights)
        return totals[inverse], norms[inverse], top[inverse]

    def _logits(self, items: Tensor, own: Tensor) -> Tensor:
        """Attention logits of history items ``items [n, d]`` for users ``own [n, d]`` -> ``[n]``."""
        keys = torch.tanh(self.key(items))  # [n, d]
        if self.aggregator == "user_attention":
            return (keys * own).sum(dim=1)
        return (keys @ self.attention_query).squeeze(1)

    def _weight_of(self, item: Tensor, own: Tensor, shift: Tensor | None) -> Tensor:
        """``a_i [B]``: the weight the history sum gave item ``item [B, d]``: 1 for the mean, else
        ``exp(logit_i - m_u)`` with the sum's ``shift = m_u [B]``."""
        if shift is None:
            return item.new_ones(item.shape[0])
        return torch.exp(self._logits(item, own) - shift)

    def begin_step(self, queries: Tensor, positives: Tensor) -> None:
        self._step = (queries, self.user_tower(queries, leave_out=positives))
        self._items = normalize_rows(self.item_embedding.weight)

    def end_step(self) -> None:
        self._step = None
        self._items = None

    def begin_evaluation(self) -> None:
        self._items = normalize_rows(self.item_embedding.weight)

    def end_evaluation(self) -> None:
        self._items = None

    def query_embeddings(self, queries: Tensor) -> Tensor:
        if self._step is not None and queries is self._step[0]:
            return self._step[1]
        return self.user_tower(queries)

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        table = self._items if self._items is not None else normalize_rows(self.item_embedding.weight)
        if items is None:
            return table
        return table.index_select(0, items.reshape(-1)).view(*items.shape, table.shape[1])

    def regularization(self, queries: Tensor, positives: Tensor, negatives: Negatives) -> Tensor | float:
        if not self.l2:
            return 0.0
        tables = squared_norm(self.user_embedding.weight) + squared_norm(self.item_embedding.weight)
        return self.l2 * 0.5 * tables
