"""SASRec: a causal transformer over a session's items, predicting the next item at every position.

With one uniform negative per event and ``bce`` it is SASRec as published; with thousands of shared
uniform and in-batch negatives, a ``topk`` selection and ``sampled_softmax`` it is TRON. Those are
configs (``configs/yoochoose/``), not code branches: the model only encodes sessions and scores items.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from recsys.interfaces import RankingBatch, Section
from recsys.models.base import DotProductModule, TrainingParts

__all__ = ["SASRec", "SASRecConfig"]


class SASRecConfig(Section):
    """``model.name: sasrec``. TRON's settings: dim 200, 2 layers, 1 head, dropout 0.05 (Yoochoose,
    OTTO) or 0.2 (Diginetica), input length 50."""

    session_model: ClassVar[bool] = True  # trains on session data (recsys.data.sessions)
    name: Literal["sasrec"] = "sasrec"
    dim: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    max_len: int = Field(50, ge=1)  # input length: each session's last max_len + 1 events are used


class SASRec(DotProductModule):
    """Self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), as TRON builds it
    (Wilm et al., RecSys 2023; otto-de/TRON ``src/sasrec/model.py``).

    Input ``x_t = sqrt(d) E[i_t] + P[t]`` (item embedding scaled by sqrt(d), learned positions, dropout);
    ``layers`` pre-LayerNorm encoder blocks (one attention with ``heads`` heads, a feed-forward of
    width ``d``) and a final LayerNorm give ``h_t``; the score of item ``j`` after position ``t`` is
    ``h_t . E[j]`` with the input embeddings shared as output embeddings and no bias (Kang & McAuley,
    Eq. 5 with shared embeddings). Attention is causal: position ``t`` sees positions ``<= t`` that are
    not padding (and itself, so a padded row never has nothing to attend to).

    Queries are the positions that have a next item. A batch is ``(sessions [B], inputs [B, L],
    targets [B, L])`` (item id + 1, 0 padding; ``recsys.data.sessions``); the hidden states of its
    ``Q`` predicting positions are kept for the step, queries ``[Q]`` index them, and the sampler knows
    each query by its session (``owners``), so ``exclude_positives`` rejects the session's own items.
    Evaluation ranks every item for every position of every session (no items masked: a session may
    click an item again), with the same evaluator and metric kernels as the user-item models.

    Args:
        config: the ``model`` section.
        parts: sampler, loss, evaluator, optimizer settings; ``n_items`` real items (row 0 of the
            embedding table is padding, so it has ``n_items + 1`` rows).
    """

    def __init__(self, config: SASRecConfig, parts: TrainingParts) -> None:
        super().__init__(parts)
        self.dim = config.dim
        self.heads = config.heads
        self.max_len = config.max_len
        self.item_embedding = nn.Embedding(parts.n_items + 1, config.dim)
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        nn.init.xavier_uniform_(self.position_embedding.weight)
        self.input_dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(
            d_model=config.dim, nhead=config.heads, dim_feedforward=config.dim, dropout=config.dropout,
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            block, num_layers=config.layers, norm=nn.LayerNorm(config.dim), enable_nested_tensor=False
        )
        future = torch.ones(config.max_len, config.max_len, dtype=torch.bool).triu(diagonal=1)
        self.register_buffer("_future", future, persistent=False)
        self._hidden: Tensor | None = None  # [Q, d] of the current step or evaluation batch
        self._first_query = 0  # query id of the first row of _hidden
        self._queries_seen = 0  # queries evaluated so far in this pass

    # -- encoding ---------------------------------------------------------------------------------
    def encode(self, inputs: Tensor) -> Tensor:
        """``inputs [B, L]`` (item id + 1, 0 padding, left-padded) -> hidden states ``[B, L, d]``."""
        length = inputs.shape[1]
        if length > self.max_len:
            raise ValueError(f"inputs of length {length} exceed max_len {self.max_len}")
        x = self.item_embedding(inputs) * math.sqrt(self.dim)
        x = x + self.position_embedding.weight[self.max_len - length :]  # the last `length` positions
        return self.encoder(self.input_dropout(x), mask=self._attention_mask(inputs))

    def _attention_mask(self, inputs: Tensor) -> Tensor:
        """``[B * heads, L, L]`` bool, True where a query position may not attend to a key position."""
        length = inputs.shape[1]
        padding = (inputs == 0).unsqueeze(1)  # [B, 1, L]: padded keys
        blocked = self._future[:length, :length] | padding  # [B, L, L]
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=inputs.device)  # always itself
        return blocked.repeat_interleave(self.heads, dim=0)

    def _keep_predicting_positions(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Encode, keep the hidden states of positions with a target; -> ``where [B, L']`` (the columns
        kept), positives ``[Q]``."""
        # Columns that are padding in every row change nothing (padded keys are masked, positions are
        # counted from the right): drop them. Sessions are short (Yoochoose: 4 events on average), so
        # this is most of a batch of 50 columns.
        occupied = (inputs > 0).any(dim=0)  # [L]
        start = int(occupied.to(torch.int8).argmax()) if bool(occupied.any()) else inputs.shape[1] - 1
        inputs, targets = inputs[:, start:], targets[:, start:]
        where = targets > 0
        self._hidden = self.encode(inputs)[where]  # [Q, d]
        return where, targets[where] - 1

    # -- scoring (DotProductModule) --------------------------------------------------------------
    def query_embeddings(self, queries: Tensor) -> Tensor:
        if self._hidden is None:
            raise RuntimeError("SASRec scores queries of the current batch only; encode one first")
        return self._hidden[queries - self._first_query]

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        if items is None:
            return self.item_embedding.weight[1:]  # [n_items, d]: padding is never ranked
        return self.lookup(self.item_embedding, items + 1)

    # -- training ---------------------------------------------------------------------------------
    def training_loss(self, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:  # type: ignore[override]
        sessions, inputs, targets = batch  # [B], [B, L], [B, L]
        where, positives = self._keep_predicting_positions(inputs, targets)
        owners = sessions.unsqueeze(1).expand_as(where)[where]  # [Q]
        self._first_query = 0
        loss = self.sampled_loss(torch.arange(len(positives), device=inputs.device), positives, owners)
        self._hidden = None
        return loss

    # -- evaluation -------------------------------------------------------------------------------
    def begin_evaluation(self) -> None:
        self._queries_seen = 0

    def end_evaluation(self) -> None:
        self._hidden = None

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_index: int) -> None:  # type: ignore[override]
        self.evaluator.step(self, self._ranking_batch(batch))

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_index: int) -> None:  # type: ignore[override]
        self.evaluator.step(self, self._ranking_batch(batch))

    def _ranking_batch(self, batch: tuple[Tensor, Tensor, Tensor]) -> RankingBatch:
        """Every predicting position of the batch as one query, its next item the one relevant item.

        Query ids count positions across the pass (in stored session order), so per-query results
        line up between models evaluated on the same sessions.
        """
        _, inputs, targets = batch
        _, positives = self._keep_predicting_positions(inputs, targets)
        count = len(positives)
        self._first_query = self._queries_seen
        self._queries_seen += count
        rows = torch.arange(count, device=inputs.device)
        nothing = rows[:0]
        return RankingBatch(
            queries=rows + self._first_query,
            exclude_rows=nothing,
            exclude_cols=nothing,
            relevant_rows=rows,
            relevant_cols=positives,
        )
