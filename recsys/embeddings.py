"""Reading rows of an embedding table, the fast way for dense and for sparse gradients."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["embedding_table", "lookup"]


def lookup(table: nn.Embedding, ids: Tensor) -> Tensor:
    """Rows of ``table`` for ``ids [...]`` -> ``[..., d]``.

    Sparse gradients (``table.sparse``, set by the ``sparse_adam`` optimizer) go through
    ``F.embedding``; dense ones through ``index_select``, whose backward (an ``index_add`` into zeros)
    measured faster on CPU than the embedding's dense backward.
    """
    if table.sparse:
        return F.embedding(ids, table.weight, sparse=True)
    return table.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, table.embedding_dim)


Init = Literal["normal", "xavier_normal", "xavier_uniform"]


def embedding_table(rows: int, dim: int, init: Init = "normal", std: float = 0.1) -> nn.Embedding:
    """A ``[rows, dim]`` embedding table initialised by ``init`` (``std`` for ``normal``)."""
    table = nn.Embedding(rows, dim)
    if init == "xavier_normal":
        nn.init.xavier_normal_(table.weight)
    elif init == "xavier_uniform":
        nn.init.xavier_uniform_(table.weight)
    else:
        nn.init.normal_(table.weight, std=std)
    return table
