"""UniformSampler: the Negatives contract, exclusion of positives on both paths, uniformity, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats
import torch
from factories import rows_csr, rows_interactions
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import ConfigError
from recsys.samplers import SAMPLERS
from recsys.samplers.uniform import UniformConfig, UniformSampler

TABLE = 2**25  # the default: every matrix here fits, so the complement table is used
SKIP_COUNTING = 0  # no table fits: skip counting is used
PATHS = pytest.mark.parametrize("table_entries", [TABLE, SKIP_COUNTING], ids=["table", "skip_counting"])


def _draw(sampler: UniformSampler, users: list[int] | torch.Tensor):
    queries = torch.as_tensor(users, dtype=torch.long)
    return sampler(queries, torch.zeros_like(queries), scorer=lambda items: torch.zeros(items.shape))


# Each user's positives: none, all items but one, or a random subset (never every item).
@st.composite
def _positive_rows(draw: st.DrawFn) -> tuple[list[list[int]], int]:
    n_items = draw(st.integers(1, 40))
    n_users = draw(st.integers(1, 8))
    rows = []
    for _ in range(n_users):
        kind = draw(st.sampled_from(["none", "all_but_one", "random"]))
        if kind == "none":
            rows.append([])
        elif kind == "all_but_one":
            free = draw(st.integers(0, n_items - 1))
            rows.append([item for item in range(n_items) if item != free])
        else:
            items = draw(st.sets(st.integers(0, n_items - 1), max_size=n_items - 1))
            rows.append(sorted(items))
    return rows, n_items


# --- the Negatives contract ------------------------------------------------------------------------


@pytest.mark.parametrize("exclude", [False, True])
@PATHS
def test_negatives_shapes_and_dtypes(exclude: bool, table_entries: int) -> None:
    rows = [[0, 3], [], [1, 2, 4]]
    positives = rows_csr(rows, 6) if exclude else None
    sampler = UniformSampler(6, n_negatives=4, positives=positives, table_entries=table_entries)
    negatives = _draw(sampler, [2, 0, 1, 0, 2])
    assert negatives.items.shape == (5, 4) and negatives.items.dtype == torch.long
    assert negatives.log_q.shape == (5, 4) and negatives.log_q.is_floating_point()
    assert negatives.weight.shape == (5, 4) and bool((negatives.weight == 1).all())
    assert negatives.pos_weight.shape == (5,) and bool((negatives.pos_weight == 1).all())
    assert negatives.unit_weights
    assert bool(((negatives.items >= 0) & (negatives.items < 6)).all())


def test_log_q_without_exclusion_is_minus_log_n_items() -> None:
    negatives = _draw(UniformSampler(7, n_negatives=3), [0, 5, 2])
    torch.testing.assert_close(negatives.log_q, torch.full((3, 3), -math.log(7)))


@PATHS
def test_log_q_is_minus_log_non_positive_count(table_entries: int) -> None:
    rows = [[0, 3], [], [1, 2, 4, 5, 6, 7, 8, 9], [9]]  # 8, 10, 2 and 9 non-positives of 10 items
    sampler = UniformSampler(10, n_negatives=3, positives=rows_csr(rows, 10), table_entries=table_entries)
    negatives = _draw(sampler, [2, 0, 3, 1, 2])
    expected = -torch.log(torch.tensor([2.0, 8.0, 9.0, 10.0, 2.0])).unsqueeze(1).expand(5, 3)
    torch.testing.assert_close(negatives.log_q, expected)


# --- exclusion -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(_positive_rows(), st.integers(0, 2**31 - 1))
def test_exclusion_never_returns_a_positive_and_both_paths_agree(
    matrix: tuple[list[list[int]], int], seed: int
) -> None:
    rows, n_items = matrix
    positives = rows_csr(rows, n_items)
    table = UniformSampler(n_items, 16, positives, seed=seed, table_entries=TABLE)
    skip = UniformSampler(n_items, 16, positives, seed=seed, table_entries=SKIP_COUNTING)
    assert table._complement is not None and skip._complement is None  # really two paths
    # Every user, several times, in a shuffled order: a batch mixes users.
    users = torch.randperm(3 * len(rows), generator=torch.Generator().manual_seed(seed)) % len(rows)
    from_table = _draw(table, users).items
    from_skip = _draw(skip, users).items
    positive_mask = torch.from_numpy(positives.toarray() > 0)  # [n_users, n_items]
    for items in (from_table, from_skip):
        assert bool(((items >= 0) & (items < n_items)).all())
        assert not bool(positive_mask[users.unsqueeze(1), items].any())
    # The same random rank maps to the same item on both paths.
    assert torch.equal(from_table, from_skip)


def test_both_paths_agree_on_a_larger_matrix() -> None:
    """300 users of 500 items at densities from 0 to 0.99: exclusion holds and the paths agree."""
    rng = np.random.default_rng(0)
    density = rng.uniform(0, 0.99, size=(300, 1))
    dense = rng.uniform(size=(300, 500)) < density
    dense[np.arange(300), rng.integers(500, size=300)] = False  # every user keeps a non-positive
    positives = sp.csr_array(dense.astype(np.float32))
    table = UniformSampler(500, 64, positives, seed=5, table_entries=TABLE)
    skip = UniformSampler(500, 64, positives, seed=5, table_entries=SKIP_COUNTING)
    users = torch.from_numpy(rng.permutation(np.repeat(np.arange(300), 2)))
    from_table, from_skip = _draw(table, users).items, _draw(skip, users).items
    assert torch.equal(from_table, from_skip)
    assert not bool(torch.from_numpy(dense)[users.unsqueeze(1), from_table].any())


def test_user_with_one_non_positive_always_gets_it() -> None:
    rows = [[0, 1, 2, 4], [1, 2, 3, 4], [0, 1, 2, 3]]  # only 3, 0 and 4 are free
    for table_entries in (TABLE, SKIP_COUNTING):
        sampler = UniformSampler(5, 50, rows_csr(rows, 5), table_entries=table_entries)
        items = _draw(sampler, [0, 1, 2]).items
        assert torch.equal(items, torch.tensor([[3], [0], [4]]).expand(3, 50))


@PATHS
def test_user_with_every_item_is_a_config_error(table_entries: int) -> None:
    rows = [[0, 2], [0, 1, 2, 3], []]
    with pytest.raises(ConfigError, match="user 1 interacted with every item"):
        UniformSampler(4, 2, rows_csr(rows, 4), table_entries=table_entries)


# --- uniformity ------------------------------------------------------------------------------------


@PATHS
def test_exclusion_is_uniform_over_each_users_non_positives(table_entries: int) -> None:
    n_items = 60
    rows = [
        list(range(40, 60)),  # positives at the end
        list(range(0, 25)),  # positives at the start
        list(range(1, 60, 3)),  # positives spread out
        [],
    ]
    sampler = UniformSampler(n_items, 1000, rows_csr(rows, n_items), seed=7, table_entries=table_entries)
    users = torch.arange(len(rows)).repeat(100)  # 10^5 draws per user, users interleaved
    items = _draw(sampler, users).items
    for user, positive in enumerate(rows):
        counts = np.bincount(items[users == user].flatten().numpy(), minlength=n_items)
        free = np.setdiff1d(np.arange(n_items), positive)
        assert counts[positive].sum() == 0
        assert scipy.stats.chisquare(counts[free]).pvalue > 1e-3, f"user {user}"


def test_without_exclusion_is_uniform_over_all_items() -> None:
    n_items = 97
    sampler = UniformSampler(n_items, 1000, seed=3)
    items = _draw(sampler, torch.zeros(200, dtype=torch.long)).items  # 2 * 10^5 draws
    counts = np.bincount(items.flatten().numpy(), minlength=n_items)
    assert len(counts) == n_items
    assert scipy.stats.chisquare(counts).pvalue > 1e-3


def test_uniformity_check_detects_a_skewed_draw() -> None:
    """The chi-square bound above is tight enough to catch a 10% over-weight on one item."""
    rng = np.random.default_rng(0)
    probabilities = np.full(40, 1.0)
    probabilities[0] = 1.1
    counts = np.bincount(rng.choice(40, 10**5, p=probabilities / probabilities.sum()), minlength=40)
    assert scipy.stats.chisquare(counts).pvalue < 1e-3


# --- seeding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("exclude", [False, True])
@PATHS
def test_same_seed_same_negatives_different_seed_different(exclude: bool, table_entries: int) -> None:
    rows = [[0, 1], [5], [], [2, 3, 4, 6, 7, 8]]
    positives = rows_csr(rows, 50) if exclude else None

    def sampler(seed: int) -> UniformSampler:
        return UniformSampler(50, 20, positives, seed=seed, table_entries=table_entries)

    users = [3, 0, 1, 2, 0]
    first, again, other = (_draw(sampler(seed), users).items for seed in (11, 11, 12))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_successive_batches_differ() -> None:
    sampler = UniformSampler(50, 20, rows_csr([[1, 2], []], 50), seed=0)
    assert not torch.equal(_draw(sampler, [0, 1]).items, _draw(sampler, [0, 1]).items)


def test_sampler_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _draw(UniformSampler(10, 5, rows_csr([[1]], 10), seed=1), [0])
    _draw(UniformSampler(10, 5, seed=1), [0])
    torch.testing.assert_close(torch.rand(3), expected)


# --- config ----------------------------------------------------------------------------------------


def test_from_config_excludes_training_positives() -> None:
    train = rows_interactions([[0, 1, 2], [3], []], n_items=5)
    sampler = UniformSampler.from_config(UniformConfig(n_negatives=8, exclude_positives=True), train, seed=4)
    assert sampler.exclude_positives and sampler.n_negatives == 8 and sampler.seed == 4
    negatives = _draw(sampler, [0] * 50)
    assert negatives.items.shape == (50, 8)
    assert bool((negatives.items >= 3).all())
    torch.testing.assert_close(negatives.log_q, torch.full((50, 8), -math.log(2)))


def test_from_config_without_exclusion_allows_a_user_with_every_item() -> None:
    train = rows_interactions([[0, 1, 2], [1]], n_items=3)
    sampler = UniformSampler.from_config(UniformConfig(exclude_positives=False), train, seed=0)
    assert not sampler.exclude_positives and sampler.n_negatives == 1
    torch.testing.assert_close(_draw(sampler, [0, 1]).log_q, torch.full((2, 1), -math.log(3)))
    with pytest.raises(ConfigError, match="user 0 interacted with every item"):
        UniformSampler.from_config(UniformConfig(exclude_positives=True), train, seed=0)


def test_registry_builds_the_uniform_sampler() -> None:
    train = rows_interactions([[0], [1, 2]], n_items=4)
    config = SAMPLERS.config_class("uniform")(n_negatives=3, exclude_positives=True)
    sampler = SAMPLERS.build(config, train, 9)
    assert isinstance(sampler, UniformSampler) and sampler.exclude_positives and sampler.seed == 9
    assert _draw(sampler, [1]).items.shape == (1, 3)
