"""Reading rows of an embedding table, the fast way for dense and for sparse gradients."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["embedding_tables", "lookup"]


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


def embedding_tables(n_users: int, n_items: int, dim: int, init: Init = "normal", std: float = 0.1) -> tuple[nn.Embedding, nn.Embedding]:
    """A user and an item table ``[n, dim]`` initialised by ``init`` (``std`` for ``normal``).

    Both are built before either is initialised: that fixes the order of random draws, so a seed
    gives the same initial weights as it did when each model built its tables itself.
    """
    tables = (nn.Embedding(n_users, dim), nn.Embedding(n_items, dim))
    for table in tables:
        if init == "xavier_normal":
            nn.init.xavier_normal_(table.weight)
        elif init == "xavier_uniform":
            nn.init.xavier_uniform_(table.weight)
        else:
            nn.init.normal_(table.weight, std=std)
    return tables
