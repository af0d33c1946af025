"""PopularitySampler: p(i) proportional to count(i)^alpha through an exact alias table, log_q, exclusion
of the user's positives by rejection, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from factories import rows_interactions
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.samplers import SAMPLERS
from recsys.samplers.popularity import PopularityConfig, PopularitySampler, alias_table

# Skewed over four orders of magnitude, with two items nobody interacted with (1 and 6).
COUNTS = np.array([1000, 0, 1, 3, 40, 7, 0, 250, 12, 2, 90, 1], dtype=np.int64)


def _interactions_with_counts(counts: np.ndarray, extra_rows: list[list[int]]) -> Interactions:
    """``extra_rows`` as the first users, then one user per interaction so that ``item_counts()`` is
    exactly ``counts`` plus the extra rows' items."""
    filler = [[item] for item, count in enumerate(counts) for _ in range(int(count))]
    return rows_interactions(extra_rows + filler, len(counts))


def _draw(sampler: PopularitySampler, users: list[int] | torch.Tensor):
    queries = torch.as_tensor(users, dtype=torch.long)
    return sampler(queries, torch.zeros_like(queries), scorer=lambda items: torch.zeros(items.shape))


def _probability(counts: np.ndarray, alpha: float) -> np.ndarray:
    weights = np.array([float(c) ** alpha for c in counts])  # Python's 0.0 ** 0 == 1 too
    return weights / weights.sum()


def _chisquare_pvalue(observed: np.ndarray, probability: np.ndarray) -> float:
    """Goodness of fit of ``observed`` counts to ``probability`` over its support."""
    support = probability > 0
    expected = probability[support] / probability[support].sum() * observed[support].sum()
    return float(scipy.stats.chisquare(observed[support], expected).pvalue)


# --- the distribution ------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.0])
def test_a_million_draws_follow_count_to_the_alpha(alpha: float) -> None:
    sampler = PopularitySampler(COUNTS, n_negatives=1000, alpha=alpha, seed=3)
    items = _draw(sampler, torch.zeros(1000, dtype=torch.long)).items  # 10^6 draws
    observed = np.bincount(items.flatten().numpy(), minlength=len(COUNTS))
    assert len(observed) == len(COUNTS)
    probability = _probability(COUNTS, alpha)
    assert _chisquare_pvalue(observed, probability) > 1e-3
    never_interacted = COUNTS == 0
    if alpha > 0:
        assert observed[never_interacted].sum() == 0
    else:  # uniform: every item, interacted with or not, about 10^6 / 12 times
        assert (observed[never_interacted] > 70_000).all()


def test_chisquare_tells_neighbouring_alphas_apart() -> None:
    """The bound above is tight: a million draws at alpha 0.75 fail the fit to alpha 0.7 and 1."""
    sampler = PopularitySampler(COUNTS, n_negatives=1000, alpha=0.75, seed=3)
    observed = np.bincount(_draw(sampler, torch.zeros(1000, dtype=torch.long)).items.flatten().numpy())
    observed = np.pad(observed, (0, len(COUNTS) - len(observed)))
    assert _chisquare_pvalue(observed, _probability(COUNTS, 0.7)) < 1e-3
    assert _chisquare_pvalue(observed, _probability(COUNTS, 1.0)) < 1e-3


def test_single_item_with_mass_is_always_drawn() -> None:
    counts = np.array([0, 0, 5, 0])
    sampler = PopularitySampler(counts, n_negatives=50, alpha=0.5, seed=0)
    negatives = _draw(sampler, [0, 0, 0])
    assert bool((negatives.items == 2).all())
    torch.testing.assert_close(negatives.log_q, torch.zeros(3, 50))


def test_no_item_with_positive_weight_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no item has a positive popularity weight"):
        PopularitySampler(np.zeros(5, dtype=np.int64), n_negatives=1, alpha=1.0, seed=0)


# --- the alias table -------------------------------------------------------------------------------


def _alias_mass(keep: np.ndarray, alias: np.ndarray) -> np.ndarray:
    """The probability of each item under the table: slot ``s`` (chance 1/n) keeps ``s`` with
    ``keep[s]`` and gives ``alias[s]`` the rest."""
    n = len(keep)
    mass = keep.copy()
    np.add.at(mass, alias, 1.0 - keep)
    return mass / n


_weights = st.lists(
    st.one_of(st.just(0.0), st.floats(1e-9, 1.0), st.floats(1.0, 1e6), st.integers(0, 50).map(float)),
    min_size=1,
    max_size=60,
).filter(lambda weights: sum(weights) > 0)


@settings(max_examples=200, deadline=None)
@given(_weights)
def test_alias_table_reproduces_the_probabilities_exactly(weights: list[float]) -> None:
    probability = np.array(weights) / np.sum(weights)
    keep, alias = alias_table(probability)
    assert keep.shape == alias.shape == probability.shape
    assert keep.dtype == np.float64 and alias.dtype == np.int64
    assert ((keep >= 0) & (keep <= 1)).all()
    assert ((alias >= 0) & (alias < len(probability))).all()
    np.testing.assert_allclose(_alias_mass(keep, alias), probability, rtol=0, atol=1e-12)
    # A zero-probability item is never kept in its own slot nor anyone's alias.
    zero = probability == 0
    assert (keep[zero] == 0).all()
    assert not zero[alias[keep < 1]].any()


def test_alias_table_of_a_uniform_vector_keeps_every_slot() -> None:
    keep, alias = alias_table(np.full(8, 1 / 8))
    np.testing.assert_array_equal(keep, np.ones(8))
    np.testing.assert_allclose(_alias_mass(keep, alias), np.full(8, 1 / 8), atol=1e-15)


# --- log_q -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.0])
def test_log_q_is_the_log_probability_of_each_item(alpha: float) -> None:
    sampler = PopularitySampler(COUNTS, n_negatives=200, alpha=alpha, seed=1)
    negatives = _draw(sampler, [0, 1, 2])
    expected = torch.from_numpy(np.log(_probability(COUNTS, alpha)[negatives.items.numpy()])).float()
    torch.testing.assert_close(negatives.log_q, expected, rtol=1e-6, atol=1e-6)
    assert negatives.unit_weights and bool((negatives.weight == 1).all())
    assert bool((negatives.pos_weight == 1).all())
    assert negatives.items.shape == (3, 200) and negatives.items.dtype == torch.long


def test_log_q_with_exclusion_is_renormalised_by_the_free_mass() -> None:
    rows = [[0, 7], [4], [], [1, 2, 3, 5, 8, 9, 10, 11]]  # user 0 holds most of the mass
    train = _interactions_with_counts(COUNTS, rows)
    counts = train.item_counts()
    sampler = PopularitySampler.from_config(
        PopularityConfig(n_negatives=300, alpha=1.0, exclude_positives=True), train, seed=2
    )
    users = [0, 1, 2, 3, 0]
    negatives = _draw(sampler, users)
    probability = _probability(counts, 1.0)
    for row, user in enumerate(users):
        positive_mass = probability[rows[user]].sum()
        items = negatives.items[row].numpy()
        expected = np.log(probability[items]) - np.log(1.0 - positive_mass)
        np.testing.assert_allclose(negatives.log_q[row].numpy(), expected, rtol=1e-5, atol=1e-5)
    # The renormalised probabilities of a user's non-positives sum to 1.
    free = np.setdiff1d(np.arange(len(counts)), rows[0])
    assert np.isclose((probability[free] / (1 - probability[rows[0]].sum())).sum(), 1.0)


# --- exclusion -------------------------------------------------------------------------------------


def test_exclusion_never_returns_a_positive_and_renormalises_p() -> None:
    rows = [[0, 10], [7, 4, 3], []]  # user 0's positives hold most of the mass
    train = _interactions_with_counts(COUNTS, rows)
    counts = train.item_counts()
    sampler = PopularitySampler(counts, n_negatives=1000, alpha=0.75, seed=5, train=train)
    users = torch.arange(3).repeat(500)  # 5 * 10^5 draws per user, users interleaved
    items = _draw(sampler, users).items
    probability = _probability(counts, 0.75)
    for user, positive in enumerate(rows):
        observed = np.bincount(items[users == user].flatten().numpy(), minlength=len(counts))
        assert observed[positive].sum() == 0, f"user {user}"
        renormalised = probability.copy()
        renormalised[positive] = 0
        assert _chisquare_pvalue(observed, renormalised) > 1e-3, f"user {user}"


def test_exclusion_holds_for_every_user_of_a_random_matrix() -> None:
    rng = np.random.default_rng(0)
    dense = rng.uniform(size=(40, 30)) < rng.uniform(0, 0.6, size=(40, 1))
    dense[:, 0] = False  # item 0 is nobody's positive and popular below: no user holds all the mass
    rows = [list(np.flatnonzero(row)) for row in dense]
    train = _interactions_with_counts(np.array([50] + [0] * 29), rows)
    sampler = PopularitySampler(train.item_counts(), n_negatives=64, alpha=1.0, seed=9, train=train)
    users = torch.from_numpy(rng.permutation(np.repeat(np.arange(40), 3)))
    items = _draw(sampler, users).items
    assert not bool(torch.from_numpy(dense)[users.unsqueeze(1), items].any())


def test_user_whose_positives_hold_all_the_mass_is_a_config_error() -> None:
    # Items 0 and 1 are user 1's alone; item 2 has no interactions, so at alpha > 0 user 1 owns p.
    train = rows_interactions([[0], [0, 1]], n_items=3)
    with pytest.raises(ConfigError, match="user 1's positives hold all the popularity mass"):
        PopularitySampler(train.item_counts(), n_negatives=1, alpha=0.5, seed=0, train=train)
    # At alpha 0 item 2 has mass, so the same users are fine.
    sampler = PopularitySampler(train.item_counts(), n_negatives=20, alpha=0.0, seed=0, train=train)
    assert bool((_draw(sampler, [1]).items == 2).all())


# --- seeding and config ----------------------------------------------------------------------------


@pytest.mark.parametrize("exclude", [False, True])
def test_same_seed_same_draws_different_seed_different(exclude: bool) -> None:
    train = _interactions_with_counts(COUNTS, [[0, 4], [7]])

    def sampler(seed: int) -> PopularitySampler:
        return PopularitySampler(train.item_counts(), 40, 0.75, seed, train if exclude else None)

    users = [1, 0, 2, 0]
    first, again, other = (_draw(sampler(seed), users).items for seed in (4, 4, 5))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    same = sampler(4)
    assert not torch.equal(_draw(same, users).items, _draw(same, users).items)  # batches move on


def test_registry_builds_the_popularity_sampler_from_item_counts() -> None:
    train = rows_interactions([[0, 1], [1], [1, 2]], n_items=4)  # counts 1, 3, 1, 0
    config = SAMPLERS.config_class("popularity")(n_negatives=7, alpha=1.0)
    sampler = SAMPLERS.build(config, train, 8)
    assert isinstance(sampler, PopularitySampler) and sampler.seed == 8 and sampler.positives is None
    negatives = _draw(sampler, [0, 2])
    assert negatives.items.shape == (2, 7)
    assert not bool((negatives.items == 3).any())
    expected = torch.log(torch.tensor([0.2, 0.6, 0.2, 0.0]))[negatives.items]
    torch.testing.assert_close(negatives.log_q, expected)
