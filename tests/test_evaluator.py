"""Full-ranking evaluation: exact top-k, masking, batch-size invariance, and a plain per-user reference."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from recsys.data.batching import ranking_batches
from recsys.data.interactions import Interactions
from recsys.evaluation.evaluator import EvalConfig, FullRankingEvaluator
from recsys.evaluation.metrics import METRICS
from recsys.evaluation.topk import top_k
from recsys.interfaces import DotProductScorer, RankingBatch, Scorer


# --- fixtures: interactions and scorers -------------------------------------------------------------


def _interactions(pairs: np.ndarray | list[tuple[int, int]], n_users: int, n_items: int) -> Interactions:
    """Interactions from ``[nnz, 2]`` (user, item) pairs."""
    pairs = np.asarray(pairs, dtype=np.int32).reshape(-1, 2)
    return Interactions(
        users=np.ascontiguousarray(pairs[:, 0]),
        items=np.ascontiguousarray(pairs[:, 1]),
        n_users=n_users,
        n_items=n_items,
        user_ids=pl.Series(range(n_users)),
        item_ids=pl.Series(range(n_items)),
    )


class EmbeddingScorer(nn.Module):
    """A dot-product scorer (the GEMM path): ``score(u, i) = user_vectors[u] . item_vectors[i]``.

    The vectors are buffers, or trainable parameters (``trainable=True``) as in a model being fitted.
    """

    def __init__(self, user_vectors: Tensor, item_vectors: Tensor, trainable: bool = False) -> None:
        super().__init__()
        if trainable:
            self.user_vectors = nn.Parameter(user_vectors.float())
            self.item_vectors = nn.Parameter(item_vectors.float())
        else:
            self.register_buffer("user_vectors", user_vectors.float())
            self.register_buffer("item_vectors", item_vectors.float())
        self.n_items = item_vectors.shape[0]

    def query_embeddings(self, queries: Tensor) -> Tensor:
        return self.user_vectors[queries]

    def item_embeddings(self) -> Tensor:
        return self.item_vectors

    def score_all(self, queries: Tensor) -> Tensor:
        return self.query_embeddings(queries) @ self.item_vectors.T


class TableScorer:
    """A scorer with only ``score_all`` (the generic path), reading a fixed ``[n_users, n_items]`` table.

    For a contiguous run of queries it returns a view of its table (as a model with cached scores
    might), so an evaluator that wrote its mask into the scores in place would corrupt the table.
    """

    def __init__(self, table: Tensor) -> None:
        self.table = table
        self.n_items = table.shape[1]

    def score_all(self, queries: Tensor) -> Tensor:
        first, last = int(queries[0]), int(queries[-1])
        if torch.equal(queries, torch.arange(first, last + 1)):
            return self.table[first : last + 1]  # a view
        return self.table[queries]


def _exact_embeddings(
    n_users: int, n_items: int, generator: torch.Generator, dim: int = 4
) -> tuple[Tensor, Tensor]:
    """User and item vectors whose dot products are exact in float32 and distinct within each user.

    Small integer coordinates give an integer score; a last coordinate of ``1`` (users) times
    ``rank / 1024`` (items, ``rank`` a random permutation) adds a distinct dyadic fraction per item, so
    no two items of a user tie and every summation order gives the same float.
    """
    assert n_items < 1024
    users = torch.randint(-4, 5, (n_users, dim), generator=generator).double()
    items = torch.randint(-4, 5, (n_items, dim), generator=generator).double()
    tie_break = torch.randperm(n_items, generator=generator).double() / 1024
    users = torch.cat([users, torch.ones(n_users, 1, dtype=torch.float64)], dim=1)
    items = torch.cat([items, tie_break.unsqueeze(1)], dim=1)
    return users, items


def _evaluate(model: Scorer, batches: list[RankingBatch], ks: tuple[int, ...]) -> dict[str, Tensor]:
    evaluator = FullRankingEvaluator(ks)
    evaluator.begin(model)
    for batch in batches:
        evaluator.step(model, batch)
    return evaluator.end()


# --- the independent reference ------------------------------------------------------------------------


def reference_metrics(
    scores: list[float], excluded: set[int], relevant: set[int], k: int
) -> dict[str, float]:
    """One user's metrics at K from the textbook: rank the unmasked items, keep the top K, count hits.

    Relevant items that are also excluded can never be found but still count in ``|relevant|``.
    """
    ranking = sorted((item for item in range(len(scores)) if item not in excluded), key=lambda i: -scores[i])
    top = ranking[:k]
    hit_ranks = [rank for rank, item in enumerate(top, start=1) if item in relevant]
    ideal_hits = min(len(relevant), k)
    return {
        "recall": len(hit_ranks) / len(relevant),
        "precision": len(hit_ranks) / k,
        "hit": 1.0 if hit_ranks else 0.0,
        "mrr": 1.0 / hit_ranks[0] if hit_ranks else 0.0,
        "ndcg": sum(1 / math.log2(rank + 1) for rank in hit_ranks)
        / sum(1 / math.log2(rank + 1) for rank in range(1, ideal_hits + 1)),
        # The n-th hit at rank r contributes precision@r = n / r.
        "map": sum(n / rank for n, rank in enumerate(hit_ranks, start=1)) / ideal_hits,
        "dcg": sum(1 / math.log2(rank + 1) for rank in hit_ranks),
    }


def _assert_matches_reference(
    results: dict[str, Tensor],
    score_table: Tensor,
    train: Interactions,
    test: Interactions,
    ks: tuple[int, ...],
) -> None:
    excluded, relevant = _item_sets(train), _item_sets(test)
    expected_users = [user for user in range(test.n_users) if relevant[user]]
    if not expected_users:
        assert results == {}  # no batch, no query: `end` of an empty pass is empty
        return
    assert results["queries"].tolist() == expected_users
    for position, user in enumerate(expected_users):
        scores = score_table[user].tolist()
        for k in ks:
            expected = reference_metrics(scores, excluded[user], relevant[user], k)
            for name in METRICS:
                actual = results[f"{name}@{k}"][position].item()
                assert actual == pytest.approx(expected[name], abs=1e-6), (user, name, k)


def _item_sets(data: Interactions) -> list[set[int]]:
    """Each user's items."""
    sets: list[set[int]] = [set() for _ in range(data.n_users)]
    for user, item in zip(data.users.tolist(), data.items.tolist(), strict=True):
        sets[user].add(item)
    return sets


# --- top_k --------------------------------------------------------------------------------------------


def _assert_top_k_exact(scores: Tensor, k: int, block: int) -> None:
    """Values equal ``torch.topk``'s exactly; indices point at those values, are distinct, and equal
    ``torch.topk``'s wherever the row has no ties."""
    values, indices = top_k(scores, k, block)
    expected_values, expected_indices = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    assert torch.equal(values, expected_values)
    assert indices.dtype == torch.long
    assert torch.equal(scores.gather(1, indices), values)
    assert all(len(set(row.tolist())) == len(row) for row in indices)
    no_ties = torch.tensor([len(set(row.tolist())) == len(row) for row in scores])
    assert torch.equal(indices[no_ties], expected_indices[no_ties])


def _uses_block_path(width: int, k: int, block: int) -> bool:
    """The documented condition under which ``top_k`` takes its block path."""
    return width % block == 0 and width // block > 4 * k


@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_k_block_path_equals_torch_topk(k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    width = 64 * (4 * k + 3)
    assert _uses_block_path(width, k, 64)
    _assert_top_k_exact(torch.randn(9, width, generator=generator), k, block=64)


def test_top_k_finds_a_top_item_hidden_in_one_block() -> None:
    # Row 0's top 3 all sit in one block; every other block holds moderate values.
    scores = torch.rand(2, 64 * 20, generator=torch.Generator().manual_seed(1))
    scores[0, 130:133] = torch.tensor([5.0, 4.0, 3.0])
    values, indices = top_k(scores, 3)
    assert values[0].tolist() == [5.0, 4.0, 3.0] and indices[0].tolist() == [130, 131, 132]
    _assert_top_k_exact(scores, 3, 64)


def test_top_k_with_ties_and_minus_infinity() -> None:
    generator = torch.Generator().manual_seed(2)
    scores = torch.randint(0, 4, (6, 64 * 30), generator=generator).float()  # heavy ties
    scores[torch.rand(scores.shape, generator=generator) < 0.9] = float("-inf")
    scores[1] = float("-inf")  # a row with nothing finite
    scores[2, :] = float("-inf")
    scores[2, [7, 700]] = 1.0  # fewer finite entries than k
    assert _uses_block_path(scores.shape[1], 5, 64)
    _assert_top_k_exact(scores, 5, block=64)


@pytest.mark.parametrize(("width", "k"), [(100, 3), (64 * 8, 3), (10, 25), (64 * 40, 500)])
def test_top_k_plain_path_and_k_beyond_width(width: int, k: int) -> None:
    scores = torch.randn(4, width, generator=torch.Generator().manual_seed(width))
    values, indices = top_k(scores, k)
    assert values.shape == indices.shape == (4, min(k, width))
    _assert_top_k_exact(scores, k, block=64)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 5),
    n_blocks=st.integers(1, 40),
    block=st.sampled_from([4, 8, 64]),
    extra=st.sampled_from([0, 0, 3]),  # 3: width is not a multiple of the block
    k=st.integers(1, 12),
    levels=st.sampled_from([3, 1000]),  # 3: many ties
    minus_infinity=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_top_k_is_exact(
    rows: int, n_blocks: int, block: int, extra: int, k: int, levels: int, minus_infinity: float, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, n_blocks * block + extra), generator=generator).float()
    scores[torch.rand(scores.shape, generator=generator) < minus_infinity] = float("-inf")
    _assert_top_k_exact(scores, k, block)


# --- evaluator against the reference ------------------------------------------------------------------


@st.composite
def _ranking_cases(draw: st.DrawFn) -> tuple[Interactions, Interactions, tuple[int, ...], int, int]:
    """A random small split: train (masked) and test (relevant) interactions that may overlap, Ks that
    may exceed the number of unmasked items, a batch size, and a seed for the scores."""
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.sampled_from([1, 3, 10, 63, 64, 65, 130]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    density = draw(st.sampled_from([0.05, 0.3, 0.9]))
    train = np.argwhere(rng.random((n_users, n_items)) < density)
    test = np.argwhere(rng.random((n_users, n_items)) < draw(st.sampled_from([0.05, 0.3])))
    ks = tuple(draw(st.lists(st.integers(1, n_items + 5), min_size=1, max_size=3, unique=True)))
    batch_size = draw(st.integers(1, n_users + 1))
    return (
        _interactions(train, n_users, n_items),
        _interactions(test, n_users, n_items),
        ks,
        batch_size,
        seed,
    )


@settings(max_examples=60, deadline=None)
@given(_ranking_cases())
def test_dot_product_path_matches_reference(
    case: tuple[Interactions, Interactions, tuple[int, ...], int, int],
) -> None:
    train, test, ks, batch_size, seed = case
    users, items = _exact_embeddings(train.n_users, train.n_items, torch.Generator().manual_seed(seed))
    model = EmbeddingScorer(users, items)
    assert isinstance(model, DotProductScorer)
    results = _evaluate(model, ranking_batches(test, train, batch_size), ks)
    _assert_matches_reference(results, users @ items.T, train, test, ks)


@settings(max_examples=60, deadline=None)
@given(_ranking_cases())
def test_score_all_path_matches_reference(
    case: tuple[Interactions, Interactions, tuple[int, ...], int, int],
) -> None:
    train, test, ks, batch_size, seed = case
    generator = torch.Generator().manual_seed(seed)
    table = torch.rand(train.n_users, train.n_items, generator=generator)
    # Distinct random floats: a random permutation per row plus noise smaller than its step.
    table = torch.argsort(table, dim=1).float() + 0.5 * torch.rand(table.shape, generator=generator)
    model = TableScorer(table)
    assert not isinstance(model, DotProductScorer)
    results = _evaluate(model, ranking_batches(test, train, batch_size), ks)
    _assert_matches_reference(results, table, train, test, ks)


def test_hand_computed_user() -> None:
    # One user, 5 items with scores 5 > 4 > 3 > 2 > 1 for items 0..4. Item 0 is masked (and relevant),
    # so the ranking is [1, 2, 3, 4]; items 1 and 3 are relevant: ranking [rel, non, rel, non].
    model = TableScorer(torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]]))
    train = _interactions([(0, 0)], 1, 5)
    test = _interactions([(0, 0), (0, 1), (0, 3)], 1, 5)
    results = _evaluate(model, ranking_batches(test, train, 8), ks=(1, 3, 10))
    assert results["recall@3"].item() == pytest.approx(2 / 3)  # |relevant| = 3 counts the masked item
    assert results["precision@3"].item() == pytest.approx(2 / 3)
    assert results["precision@10"].item() == pytest.approx(2 / 10)
    assert results["mrr@3"].item() == pytest.approx(1.0)
    assert results["hit@1"].item() == 1.0
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(3 relevant, K = 3) hits at the top
    assert results["ndcg@3"].item() == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert results["map@3"].item() == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert results["ndcg@1"].item() == pytest.approx(1.0) and results["map@1"].item() == pytest.approx(1.0)


# --- masking and padding ------------------------------------------------------------------------------


@pytest.mark.parametrize("dot_product", [True, False])
def test_masked_best_item_is_never_ranked(dot_product: bool) -> None:
    # User 0: item 5 has the highest score and is masked; item 3 (relevant) is second best.
    # User 1: its only relevant item 5 is also masked and scores highest, so it can never be found.
    n_items = 70
    item_vectors = torch.zeros(n_items, 1)
    item_vectors[:, 0] = torch.linspace(0.0, 1.0, n_items)
    item_vectors[5, 0], item_vectors[3, 0] = 10.0, 9.0
    model: Scorer = EmbeddingScorer(torch.ones(2, 1), item_vectors)
    if not dot_product:
        model = TableScorer(torch.ones(2, 1) @ item_vectors.T)
    train = _interactions([(0, 5), (1, 5)], 2, n_items)
    test = _interactions([(0, 3), (1, 5)], 2, n_items)
    results = _evaluate(model, ranking_batches(test, train, 2), ks=(1, n_items))
    assert results["hit@1"].tolist() == [1.0, 0.0]
    assert results["mrr@1"].tolist() == [1.0, 0.0]
    assert [results[f"{name}@{n_items}"][1].item() for name in METRICS] == [0.0] * len(METRICS)


@pytest.mark.parametrize("n_items", [1, 10, 70, 127])
def test_padding_columns_never_outrank_items(n_items: int) -> None:
    """Every item scores below zero, the score of the zero-padded columns (n_items not a multiple of 64)
    before masking; the relevant item is the lowest, so it must come last among the unmasked items."""
    item_vectors = -1.0 - torch.arange(n_items, dtype=torch.float32).unsqueeze(1)  # item i scores -(1 + i)
    model = EmbeddingScorer(torch.ones(1, 1), item_vectors)
    masked = list(range(0, n_items - 1, 3))  # never the last item
    train = _interactions([(0, item) for item in masked], 1, n_items)
    test = _interactions([(0, n_items - 1)], 1, n_items)
    unmasked = n_items - len(masked)
    ks = (unmasked, n_items, n_items + 64)
    results = _evaluate(model, ranking_batches(test, train, 1), (*ks, max(1, unmasked - 1)))
    for k in ks:
        assert results[f"mrr@{k}"].item() == pytest.approx(1 / unmasked)
        assert results[f"hit@{k}"].item() == 1.0
    if unmasked > 1:
        assert results[f"hit@{unmasked - 1}"].item() == 0.0


# --- batch-size invariance and the two scoring paths --------------------------------------------------


RandomSplit = tuple[Interactions, Interactions, Tensor, Tensor]  # train, test, user and item vectors
KS = (1, 5, 20, 200)  # 200 is beyond the catalogue


@pytest.fixture(scope="module")
def random_split() -> RandomSplit:
    """40 users x 150 items, train density 0.2, test density 0.05, Gaussian 8-d embeddings (float)."""
    rng = np.random.default_rng(7)
    n_users, n_items = 40, 150
    train = _interactions(np.argwhere(rng.random((n_users, n_items)) < 0.2), n_users, n_items)
    test = _interactions(np.argwhere(rng.random((n_users, n_items)) < 0.05), n_users, n_items)
    generator = torch.Generator().manual_seed(7)
    users, items = torch.randn(n_users, 8, generator=generator), torch.randn(n_items, 8, generator=generator)
    return train, test, users, items


def _assert_same_results(first: dict[str, Tensor], second: dict[str, Tensor]) -> None:
    assert first.keys() == second.keys()
    assert torch.equal(first["queries"], second["queries"])
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("dot_product", [True, False])
def test_batch_size_does_not_change_results(
    random_split: RandomSplit, dot_product: bool
) -> None:
    train, test, users, items = random_split
    model: Scorer = EmbeddingScorer(users, items)
    if not dot_product:
        model = TableScorer(users @ items.T)
    results = [_evaluate(model, ranking_batches(test, train, size), KS) for size in (1, 7, 4096)]
    users_with_targets = np.flatnonzero(test.user_counts() > 0)
    assert results[0]["queries"].tolist() == users_with_targets.tolist()
    _assert_same_results(results[0], results[1])
    _assert_same_results(results[0], results[2])


def test_dot_product_and_score_all_paths_agree(
    random_split: RandomSplit,
) -> None:
    train, test, users, items = random_split
    dot = EmbeddingScorer(users, items)
    table = TableScorer(users @ items.T)
    batches = ranking_batches(test, train, 7)
    _assert_same_results(_evaluate(dot, batches, KS), _evaluate(table, batches, KS))


def test_score_all_output_is_not_modified(random_split: RandomSplit) -> None:
    train, test, users, items = random_split
    table = users @ items.T
    model = TableScorer(table.clone())
    batches = ranking_batches(test, train, 7)
    table_storage = model.table.untyped_storage().data_ptr()
    score_storages = [model.score_all(batch.queries).untyped_storage().data_ptr() for batch in batches]
    assert table_storage in score_storages  # the scorer does hand out views of its table
    _evaluate(model, batches, KS)
    assert torch.equal(model.table, table)


# --- the evaluator's state ----------------------------------------------------------------------------


def test_end_returns_per_query_vectors_and_resets(
    random_split: RandomSplit,
) -> None:
    train, test, users, items = random_split
    model = EmbeddingScorer(users, items)
    batches = ranking_batches(test, train, 16)
    config = EvalConfig(ks=(5, 20), metrics=("ndcg", "recall", "map"))
    evaluator = FullRankingEvaluator.from_config(config)

    evaluator.begin(model)
    for batch in batches:
        evaluator.step(model, batch)
    first = evaluator.end()
    n_queries = sum(len(batch.queries) for batch in batches)
    assert set(first) == {"queries", *config.metric_names()}
    assert all(value.shape == (n_queries,) for value in first.values())
    assert first["queries"].dtype == torch.long
    assert evaluator.end() == {}  # nothing left over

    # A second pass, and a pass restarted half-way, give the same vectors instead of accumulating.
    evaluator.begin(model)
    evaluator.step(model, batches[0])
    evaluator.begin(model)
    for batch in batches:
        evaluator.step(model, batch)
    _assert_same_results(first, evaluator.end())


def test_eval_config_rejects_bad_cutoffs_and_metrics() -> None:
    for ks in ((), (0, 10)):
        with pytest.raises(ValueError, match="ks"):
            EvalConfig(ks=ks)
    with pytest.raises(ValueError):
        EvalConfig(metrics=("auc",))


def test_trainable_embeddings_are_evaluated_without_no_grad(random_split: RandomSplit) -> None:
    """A model with trainable parameters, evaluated outside ``torch.no_grad`` (a notebook, a custom loop),
    gets the same numbers as its frozen copy; the ``score_all`` path already allows this."""
    train, test, users, items = random_split
    batches = ranking_batches(test, train, 7)
    frozen = _evaluate(EmbeddingScorer(users, items), batches, KS)
    _assert_same_results(frozen, _evaluate(EmbeddingScorer(users, items, trainable=True), batches, KS))


def test_a_pass_under_inference_mode_does_not_break_the_next(random_split: RandomSplit) -> None:
    """Lightning validates under ``torch.inference_mode``; state kept from that pass (the score buffer)
    must not make a later pass under plain ``torch.no_grad`` fail or differ."""
    train, test, users, items = random_split
    model = EmbeddingScorer(users, items)
    batches = ranking_batches(test, train, 7)
    evaluator = FullRankingEvaluator(KS)

    def one_pass() -> dict[str, Tensor]:
        evaluator.begin(model)
        for batch in batches:
            evaluator.step(model, batch)
        return evaluator.end()

    with torch.inference_mode():
        first = one_pass()
    with torch.no_grad():
        second = one_pass()
    _assert_same_results(first, second)
