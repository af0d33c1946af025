"""PositiveSet: bitmap and sorted-keys membership agree with a Python set, under broadcasting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.samplers.positives import PositiveSet

BACKENDS = pytest.mark.parametrize("backend", ["bytes", "bits", "keys"])


def _all(matrix: sp.csr_array) -> list[PositiveSet]:
    sets = [PositiveSet(matrix, backend=backend) for backend in ("bytes", "bits", "keys")]
    # Really three backends: each keeps exactly its own table.
    assert [(s._bytes is not None, s._bits is not None, s._keys is not None) for s in sets] == [
        (True, False, False), (False, True, False), (False, False, True),
    ]
    return sets


@st.composite
def _sparse(draw: st.DrawFn) -> tuple[sp.csr_array, set[tuple[int, int]]]:
    """A random 0/1 matrix built from (user, item) pairs that may repeat (summed by the CSR)."""
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 37))  # often not a multiple of 8: the last byte is partial
    pairs = draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)), max_size=60))
    users = np.array([user for user, _ in pairs], dtype=np.int64)
    items = np.array([item for _, item in pairs], dtype=np.int64)
    matrix = sp.csr_array((np.ones(len(pairs), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    return matrix, set(pairs)


def _expected(pairs: set[tuple[int, int]], users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    users, items = torch.broadcast_tensors(users, items)
    return torch.tensor(
        [(user, item) in pairs for user, item in zip(users.flatten().tolist(), items.flatten().tolist())],
        dtype=torch.bool,
    ).reshape(users.shape)


@settings(max_examples=100, deadline=None)
@given(_sparse(), st.integers(0, 2**31 - 1))
def test_backends_agree_with_a_python_set(sparse: tuple[sp.csr_array, set[tuple[int, int]]], seed: int) -> None:
    matrix, pairs = sparse
    n_users, n_items = matrix.shape
    generator = torch.Generator().manual_seed(seed)
    batch, n = 6, 9
    users = torch.randint(n_users, (batch, 1), generator=generator)  # [B, 1]
    items = torch.randint(n_items, (batch, n), generator=generator)  # [B, N]
    shared_items = torch.randint(n_items, (1, n), generator=generator)  # [1, N]
    every_user = torch.arange(n_users).unsqueeze(1)  # [U, 1]
    every_item = torch.arange(n_items).unsqueeze(0)  # [1, I]
    for positive_set in _all(matrix):
        assert len(positive_set) == len(pairs)
        for query_users, query_items in (
            (users, items),
            (users, shared_items),
            (every_user, every_item),
            (users[:, 0], items[:, 0]),  # [B] with [B]
        ):
            found = positive_set.contains(query_users, query_items)
            assert found.dtype == torch.bool
            assert found.shape == torch.broadcast_shapes(query_users.shape, query_items.shape)
            assert torch.equal(found, _expected(pairs, query_users, query_items))


@BACKENDS
def test_a_known_matrix(backend: str) -> None:
    dense = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=np.float32)
    positive_set = PositiveSet(sp.csr_array(dense), backend=backend)
    assert len(positive_set) == 7
    found = positive_set.contains(torch.arange(3).unsqueeze(1), torch.arange(5).unsqueeze(0))
    assert torch.equal(found, torch.from_numpy(dense > 0))


@BACKENDS
def test_an_empty_matrix_contains_nothing(backend: str) -> None:
    positive_set = PositiveSet(sp.csr_array((4, 6), dtype=np.float32), backend=backend)
    assert len(positive_set) == 0
    found = positive_set.contains(torch.tensor([[0], [3], [2]]), torch.tensor([[0, 5], [5, 1], [2, 2]]))
    assert found.shape == (3, 2) and not bool(found.any())


def test_auto_picks_the_byte_map_for_small_matrices() -> None:
    matrix = sp.csr_array(np.eye(40, 100, dtype=np.float32))
    assert PositiveSet(matrix).backend == "bytes"


@BACKENDS
def test_unsorted_csr_with_duplicates(backend: str) -> None:
    """A CSR built from unsorted, repeated pairs is normalised before its keys are taken."""
    indptr = np.array([0, 4, 6])
    indices = np.array([7, 2, 7, 0, 5, 1])
    matrix = sp.csr_array((np.ones(6, dtype=np.float32), indices, indptr), shape=(2, 9))
    positive_set = PositiveSet(matrix, backend=backend)
    assert len(positive_set) == 5
    found = positive_set.contains(torch.tensor([[0], [1]]), torch.arange(9).unsqueeze(0))
    expected = torch.zeros(2, 9, dtype=torch.bool)
    expected[0, [0, 2, 7]] = True
    expected[1, [1, 5]] = True
    assert torch.equal(found, expected)
