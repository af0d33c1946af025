"""Randomly-exposed test sets: ranking only the exposed items, DCG, and SNIPS-weighted metrics, against
plain per-user references written independently of the vectorised kernels."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.batching import exposed_batches
from recsys.data.interactions import Interactions
from recsys.evaluation.evaluator import FullRankingEvaluator

KS = (1, 3, 5)


class _Table:
    """A scorer reading a fixed ``[n_users, n_items]`` score table."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self.n_items = table.shape[1]

    def score_all(self, queries: torch.Tensor) -> torch.Tensor:
        return self.table[queries]


def _interactions(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> Interactions:
    return Interactions(
        users=users.astype(np.int32), items=items.astype(np.int32), n_users=n_users, n_items=n_items,
        user_ids=pl.Series(range(n_users)), item_ids=pl.Series(range(n_items)),
    )


def _exposed_case(seed: int, n_users: int, n_items: int, per_user: int):
    """Each user is shown ``per_user`` random items; each is relevant with probability 0.3."""
    rng = np.random.default_rng(seed)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    users = np.repeat(np.arange(n_users), per_user)
    relevant = rng.random(len(items)) < 0.3
    exposure = _interactions(users, items, n_users, n_items)
    test = exposure.select(relevant)
    scores = torch.from_numpy(rng.normal(size=(n_users, n_items)))
    return exposure, test, scores


def _evaluate(evaluator: FullRankingEvaluator, scores, test, exposure, batch_size: int) -> dict[str, np.ndarray]:
    scorer = _Table(scores)
    evaluator.begin(scorer)
    for batch in exposed_batches(test, exposure, batch_size):
        evaluator.step(scorer, batch)
    return {name: values.numpy() for name, values in evaluator.end().items()}


def _reference(scores, test, exposure, weights=None) -> dict[str, dict[int, float]]:
    """Per user: sort the user's exposed items by score, read off each metric by its textbook formula.
    SNIPS values are the numerators; the pooled normaliser is applied by the caller."""
    shown: dict[int, list[int]] = {}
    for user, item in zip(exposure.users, exposure.items, strict=True):
        shown.setdefault(int(user), []).append(int(item))
    relevant: dict[int, set[int]] = {}
    for user, item in zip(test.users, test.items, strict=True):
        relevant.setdefault(int(user), set()).add(int(item))
    out: dict[str, dict[int, float]] = {}
    for user, items in relevant.items():
        ranking = sorted(shown[user], key=lambda item: -float(scores[user, item]))
        for k in KS:
            top = ranking[:k]
            gains = [1.0 if item in items else 0.0 for item in top]
            dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
            ideal = sum(1 / math.log2(r + 2) for r in range(min(len(items), k)))
            precisions = [sum(gains[: r + 1]) / (r + 1) for r in range(len(gains)) if gains[r]]
            out.setdefault(f"dcg@{k}", {})[user] = dcg
            out.setdefault(f"ndcg@{k}", {})[user] = dcg / ideal
            out.setdefault(f"recall@{k}", {})[user] = sum(gains) / len(items)
            out.setdefault(f"map@{k}", {})[user] = sum(precisions) / min(len(items), k)
            if weights is not None:
                out.setdefault(f"snips_recall@{k}", {})[user] = sum(
                    float(weights[item]) for item in top if item in items)
                out.setdefault(f"snips_dcg@{k}", {})[user] = sum(
                    float(weights[item]) / math.log2(r + 2) for r, item in enumerate(top) if item in items)
        out.setdefault("_mass", {})[user] = sum(float(weights[item]) for item in items) if weights is not None else 0
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), per_user=st.integers(1, 8), batch_size=st.sampled_from([1, 3, 64]))
def test_exposed_ranking_matches_a_per_user_reference(seed: int, per_user: int, batch_size: int) -> None:
    exposure, test, scores = _exposed_case(seed, n_users=9, n_items=12, per_user=per_user)
    if len(test) == 0:
        return
    weights = torch.from_numpy(np.random.default_rng(seed + 1).uniform(1, 10, 12))
    evaluator = FullRankingEvaluator(KS, ("dcg", "ndcg", "recall", "map"), item_weights=weights)
    ours = _evaluate(evaluator, scores, test, exposure, batch_size)
    reference = _reference(scores, test, exposure, weights)
    users = ours["queries"]
    assert sorted(users.tolist()) == sorted(reference["dcg@1"])  # exactly the users with a relevant item
    mass = np.mean([reference["_mass"][int(u)] for u in users])
    for name, values in ours.items():
        if name == "queries":
            continue
        expected = np.array([reference[name][int(u)] for u in users])
        if name.startswith("snips"):
            expected = expected / mass
        np.testing.assert_allclose(values, expected, rtol=1e-9, atol=1e-12, err_msg=name)


def test_only_exposed_items_are_ranked() -> None:
    """An unexposed item with the best score is never recommended: the user's ranking is among the
    exposed items only, as in Saito et al.'s evaluator."""
    exposure = _interactions(np.array([0, 0, 0]), np.array([1, 2, 3]), 1, 5)
    test = exposure.select(np.array([False, False, True]))  # item 3 relevant
    scores = torch.tensor([[9.0, 0.3, 0.2, 0.1, 8.0]])  # items 0 and 4 unexposed, best scored
    evaluator = FullRankingEvaluator((1, 3), ("dcg", "recall"))
    result = _evaluate(evaluator, scores, test, exposure, 4)
    assert result["recall@1"][0] == 0.0  # item 1 is first among the exposed
    assert result["recall@3"][0] == 1.0
    assert result["dcg@3"][0] == pytest.approx(1 / math.log2(4))  # third of three


def test_snips_with_equal_weights_is_pooled_recall() -> None:
    """With one propensity for every item, snips_recall@K is hits over relevant items pooled over users."""
    exposure, test, scores = _exposed_case(3, n_users=40, n_items=30, per_user=10)
    evaluator = FullRankingEvaluator(KS, ("recall",), item_weights=torch.full((30,), 4.0))
    result = _evaluate(evaluator, scores, test, exposure, 7)
    n_relevant = np.bincount(test.users, minlength=40)[result["queries"]]
    for k in KS:
        hits = result[f"recall@{k}"] * n_relevant
        assert result[f"snips_recall@{k}"].mean() == pytest.approx(hits.sum() / n_relevant.sum())


def test_snips_down_weights_hits_on_popular_items() -> None:
    """Two users, each finds one of two relevant items at rank 1: the one who finds the rare item
    (weight 10) scores higher than the one who finds the popular item (weight 1)."""
    exposure = _interactions(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), 2, 2)
    test = exposure
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # user 0 ranks the popular item 0 first
    weights = torch.tensor([1.0, 10.0])
    result = _evaluate(FullRankingEvaluator((1,), ("recall",), item_weights=weights), scores, test, exposure, 2)
    # Normaliser: mean relevant mass = 11; numerators 1 and 10.
    np.testing.assert_allclose(result["snips_recall@1"], [1 / 11, 10 / 11])
    np.testing.assert_allclose(result["recall@1"], [0.5, 0.5])
