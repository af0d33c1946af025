"""Small hand-made data for tests: user-item matrices, Interactions and Sessions from item lists."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data.interactions import Interactions
from recsys.data.sessions import Sessions

__all__ = ["rows_csr", "rows_interactions", "rows_sessions"]


def rows_csr(rows: list[list[int]], n_items: int) -> sp.csr_array:
    """``[len(rows), n_items]`` 0/1 CSR whose row ``u`` has ones at ``rows[u]``."""
    users = np.repeat(np.arange(len(rows)), [len(row) for row in rows])
    items = np.array([item for row in rows for item in row], dtype=np.int64)
    return sp.csr_array((np.ones(len(items), dtype=np.float32), (users, items)), shape=(len(rows), n_items))


def rows_interactions(rows: list[list[int]], n_items: int) -> Interactions:
    """Interactions where user ``u`` has the items ``rows[u]`` (original ids ``u0..``, ``i0..``)."""
    users = np.repeat(np.arange(len(rows)), [len(row) for row in rows]).astype(np.int32)
    items = np.array([item for row in rows for item in row], dtype=np.int32)
    return Interactions(
        users=users,
        items=items,
        n_users=len(rows),
        n_items=n_items,
        user_ids=pl.Series([f"u{u}" for u in range(len(rows))]),
        item_ids=pl.Series([f"i{i}" for i in range(n_items)]),
    )


def rows_sessions(rows: list[list[int]], n_items: int) -> Sessions:
    """Sessions whose session ``s`` has the item ids ``rows[s]`` (original ids = internal ids)."""
    lengths = [len(row) for row in rows]
    items = np.array([item for row in rows for item in row], dtype=np.int64)
    return Sessions(
        items=items,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        timestamps=np.arange(len(items), dtype=np.float64),
        session_ids=pl.Series(range(len(rows))),
        item_ids=pl.Series(range(n_items)),
        n_items=n_items,
    )
