"""`ranking_metrics`: hand-computed numbers, a textbook reference, and (when installed) ranx."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.evaluation.metrics import METRICS, ranking_metrics


def textbook_metrics(hits: list[bool], n_relevant: int, k: int) -> dict[str, float]:
    """Every metric at one K for one ranked list, written from the definitions with plain loops.

    ``hits[r]`` is the relevance of the item at rank ``r + 1``; a list shorter than K (a small catalogue)
    is the whole ranking. Precision divides by K and NDCG / MAP normalise by ``min(n_relevant, K)``, as
    in RecBole 1.2.1.
    """
    top = hits[:k]
    found = sum(top)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(top, start=1) if hit)
    ideal_dcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(n_relevant, k) + 1))
    first_hit = next((rank for rank, hit in enumerate(top, start=1) if hit), None)
    precisions_at_hits = [sum(top[:rank]) / rank for rank, hit in enumerate(top, start=1) if hit]
    return {
        "recall": found / n_relevant,
        "precision": found / k,
        "hit": float(found > 0),
        "mrr": 0.0 if first_hit is None else 1.0 / first_hit,
        "ndcg": dcg / ideal_dcg,
        "map": sum(precisions_at_hits) / min(n_relevant, k),
        "dcg": dcg,
    }


def _single(hits: list[bool], n_relevant: int, k: int) -> dict[str, float]:
    """``ranking_metrics`` for one query at one K, as floats."""
    results = ranking_metrics(torch.tensor([hits]), torch.tensor([n_relevant]), [k])
    return {name: results[f"{name}@{k}"].item() for name in METRICS}


def test_two_of_two_relevant_at_ranks_one_and_three() -> None:
    # Ranking [rel, non, rel] with 2 relevant items.
    values = _single([True, False, True], n_relevant=2, k=3)
    assert values["ndcg"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)), abs=1e-12)
    assert values["recall"] == pytest.approx(1.0)
    assert values["precision"] == pytest.approx(2 / 3)
    assert values["hit"] == 1.0
    assert values["mrr"] == pytest.approx(1.0)
    assert values["map"] == pytest.approx((1 / 1 + 2 / 3) / 2)  # precision@1 and precision@3 at the hits


def test_one_of_three_relevant_at_rank_two() -> None:
    values = _single([False, True, False], n_relevant=3, k=3)
    assert values["ndcg"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3) + 1 / math.log2(4)))
    assert values["recall"] == pytest.approx(1 / 3)
    assert values["precision"] == pytest.approx(1 / 3)
    assert values["mrr"] == pytest.approx(1 / 2)
    assert values["map"] == pytest.approx((1 / 2) / 3)
    assert _single([False, True, False], n_relevant=3, k=1) == dict.fromkeys(METRICS, 0.0)


def test_more_relevant_than_k_caps_ndcg_and_map_at_k() -> None:
    # Both top slots are hits: the list is ideal at K = 2 although 5 items are relevant.
    values = _single([True, True, False, False], n_relevant=5, k=2)
    assert values["ndcg"] == pytest.approx(1.0)
    assert values["map"] == pytest.approx(1.0)
    assert values["recall"] == pytest.approx(2 / 5)
    assert values["precision"] == pytest.approx(1.0)


def test_k_beyond_the_catalogue_divides_precision_by_k() -> None:
    # A catalogue of 3 items ranked [non, rel, rel] and K = 10: RecBole's precision still divides by K.
    values = _single([False, True, True], n_relevant=2, k=10)
    assert values["precision"] == pytest.approx(2 / 10)
    assert values["recall"] == pytest.approx(1.0)
    ideal = 1 + 1 / math.log2(3)
    assert values["ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / ideal)
    assert values["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_no_hit_is_zero_everywhere() -> None:
    assert _single([False] * 5, n_relevant=2, k=5) == dict.fromkeys(METRICS, 0.0)


def test_keys_dtype_and_metric_subset() -> None:
    hits = torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.int64)
    results = ranking_metrics(hits, torch.tensor([2, 1]), ks=[1, 3], metrics=["ndcg", "hit"])
    assert list(results) == ["ndcg@1", "hit@1", "ndcg@3", "hit@3"]
    assert all(value.dtype == torch.float64 and value.shape == (2,) for value in results.values())
    # 0/1 integers and bools are the same input.
    as_bool = ranking_metrics(hits.bool(), torch.tensor([2, 1]), ks=[1, 3], metrics=["ndcg", "hit"])
    assert all(torch.equal(results[name], as_bool[name]) for name in results)


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(ValueError, match="auc"):
        ranking_metrics(torch.ones(1, 3), torch.tensor([1]), [3], metrics=["ndcg", "auc"])


@st.composite
def _hit_matrices(draw: st.DrawFn) -> tuple[list[list[bool]], list[int], list[int]]:
    """Random hit rows, Ks (some beyond the depth) and a consistent ``n_relevant`` per row.

    ``n_relevant`` is at least the row's hits and may exceed them (relevant items ranked below the
    depth). A K beyond the depth means the rows are the whole catalogue, which then bounds ``n_relevant``.
    """
    depth = draw(st.integers(1, 12))
    rows = draw(st.lists(st.lists(st.booleans(), min_size=depth, max_size=depth), min_size=1, max_size=6))
    ks = draw(st.lists(st.integers(1, depth + 3), min_size=1, max_size=4, unique=True))
    most = depth if max(ks) > depth else depth + 4
    n_relevant = [draw(st.integers(max(1, sum(row)), max(1, most))) for row in rows]
    return rows, n_relevant, ks


@settings(max_examples=150, deadline=None)
@given(_hit_matrices())
def test_matches_textbook_reference(case: tuple[list[list[bool]], list[int], list[int]]) -> None:
    rows, n_relevant, ks = case
    results = ranking_metrics(torch.tensor(rows), torch.tensor(n_relevant), ks)
    for b, (row, relevant) in enumerate(zip(rows, n_relevant, strict=True)):
        for k in ks:
            expected = textbook_metrics(row, relevant, k)
            for name in METRICS:
                assert results[f"{name}@{k}"][b].item() == pytest.approx(expected[name], abs=1e-9), (name, k)


@settings(max_examples=60, deadline=None)
@given(_hit_matrices())
def test_values_are_bounded_and_ordered(case: tuple[list[list[bool]], list[int], list[int]]) -> None:
    rows, n_relevant, ks = case
    ks = sorted(ks)
    results = ranking_metrics(torch.tensor(rows), torch.tensor(n_relevant), ks)
    for name in METRICS:
        for k in ks:
            # DCG is not normalised: at most the ideal sum over the top K ranks.
            bound = sum(1 / math.log2(rank + 1) for rank in range(1, k + 1)) if name == "dcg" else 1.0
            assert ((results[f"{name}@{k}"] >= 0) & (results[f"{name}@{k}"] <= bound + 1e-12)).all(), name
    for small, large in zip(ks, ks[1:], strict=False):
        for name in ("recall", "hit", "mrr", "dcg"):  # cumulative in K
            assert (results[f"{name}@{large}"] >= results[f"{name}@{small}"]).all(), name
    for k in ks:
        assert (results[f"mrr@{k}"] <= results[f"hit@{k}"]).all()


def test_matches_ranx_where_definitions_agree() -> None:
    """Cross-check against ranx (an independent IR-metrics library) on random rankings.

    The rankings are full catalogues of distinct scores, and every relevant item is in the catalogue,
    so ranx's run covers the same items as ours. Definitions agree for recall, precision (hits / K),
    ndcg (binary gains, ideal DCG of ``min(n_relevant, K)`` hits), mrr and hit. MAP differs: ranx divides
    by ``n_relevant``, RecBole by ``min(n_relevant, K)``; the two agree exactly when ``n_relevant <= K``,
    so only those queries are compared.
    """
    ranx = pytest.importorskip("ranx")
    generator = np.random.default_rng(0)
    n_queries, n_items, ks = 40, 30, [1, 5, 10, 30]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    hits = torch.zeros(n_queries, n_items, dtype=torch.bool)
    n_relevant = torch.zeros(n_queries, dtype=torch.int64)
    for query in range(n_queries):
        scores = generator.permutation(n_items).astype(float)  # distinct scores, no ties
        relevant = generator.choice(n_items, size=generator.integers(1, 8), replace=False)
        qrels[f"q{query:03d}"] = {f"i{item}": 1 for item in relevant}
        run[f"q{query:03d}"] = {f"i{item}": float(scores[item]) for item in range(n_items)}
        ranking = np.argsort(-scores)
        hits[query] = torch.from_numpy(np.isin(ranking, relevant))
        n_relevant[query] = len(relevant)
    ours = ranking_metrics(hits, n_relevant, ks)
    names = {"recall": "recall", "ndcg": "ndcg", "mrr": "mrr", "hit": "hit_rate", "precision": "precision"}
    for k in ks:
        requested = [f"{theirs}@{k}" for theirs in names.values()] + [f"map@{k}"]
        theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), requested, return_mean=False)
        for name, ranx_name in names.items():
            np.testing.assert_allclose(ours[f"{name}@{k}"].numpy(), theirs[f"{ranx_name}@{k}"], atol=1e-6)
        agree = (n_relevant <= k).numpy()
        np.testing.assert_allclose(ours[f"map@{k}"].numpy()[agree], theirs[f"map@{k}"][agree], atol=1e-6)
