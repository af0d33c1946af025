"""TopKSampler: the k best-scored of a base sampler's candidates, masked positives never kept.

A twin of the base sampler (same class, same seed) shows which candidates the wrapped base drew, so
every test compares the kept negatives with a brute-force sort of those candidates.
"""

from __future__ import annotations

import math

import pytest
import torch
from factories import rows_csr, rows_interactions
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from recsys.interfaces import Negatives
from recsys.samplers import SAMPLERS
from recsys.samplers.mixed import MixedConfig
from recsys.samplers.topk import TopKConfig, TopKSampler, select, with_candidates
from recsys.samplers.uniform import UniformConfig, UniformSampler


def _table_scorer(table: torch.Tensor):
    """The scorer of one batch whose query ``b`` scores item ``i`` as ``table[b, i]``."""
    return lambda items: table.gather(1, items)


def _item_id_scorer(items: torch.Tensor) -> torch.Tensor:
    """Every query scores item ``i`` as ``i``: the hardest negative is the largest id."""
    return items.float()


# --- the k best, by brute force --------------------------------------------------------------------


@st.composite
def _cases(draw: st.DrawFn):
    n_items = draw(st.integers(2, 25))
    n_users = draw(st.integers(1, 5))
    batch = draw(st.integers(1, 6))
    width = draw(st.integers(1, 16))
    k = draw(st.integers(1, width + 1))  # k >= width returns the candidates themselves
    # Few distinct values: ties are common, so the comparison must not depend on tie order.
    scores = draw(st.lists(st.integers(-3, 3), min_size=batch * n_items, max_size=batch * n_items))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=batch, max_size=batch))
    # Users with many positives: masked candidates are common (and each user keeps a non-positive).
    positive_sets = st.sets(st.integers(0, n_items - 1), min_size=(n_items - 1) // 2, max_size=n_items - 1)
    rows = [sorted(draw(positive_sets)) for _ in range(n_users)]
    seed = draw(st.integers(0, 2**31 - 1))
    return n_items, batch, width, k, scores, users, rows, seed


def _base(kind: str, n_items: int, width: int, rows: list[list[int]], seed: int) -> UniformSampler:
    positives = rows_csr(rows, n_items) if kind in ("per_query_excluding", "shared_masked") else None
    return UniformSampler(n_items, width, positives, seed=seed, shared=kind.startswith("shared"))


@pytest.mark.parametrize("kind", ["per_query", "per_query_excluding", "shared", "shared_masked"])
@settings(max_examples=40, deadline=None)
@given(case=_cases())
def test_keeps_exactly_the_k_best_candidates(kind: str, case) -> None:
    n_items, batch, width, k, scores, users, rows, seed = case
    table = torch.tensor(scores, dtype=torch.float32).view(batch, n_items)
    scorer = _table_scorer(table)
    queries = torch.tensor(users)
    positives = torch.zeros(batch, dtype=torch.long)

    candidates = _base(kind, n_items, width, rows, seed)(queries, positives, scorer)  # the twin's draw
    kept = TopKSampler(_base(kind, n_items, width, rows, seed), k, seed=99)(queries, positives, scorer)

    assert candidates.shared == (kind.startswith("shared") and batch > 1)  # a batch of 1 is not "shared"
    kept_width = min(k, width)
    assert kept.items.shape == kept.log_q.shape == kept.weight.shape == (batch, kept_width)
    torch.testing.assert_close(kept.pos_weight, candidates.pos_weight)
    for row in range(batch):
        def key(item: int, weight: float) -> float:  # the score, or -inf for a masked positive (weight 0)
            return table[row, item].item() if weight > 0 else -math.inf

        pool = _triples(candidates, row)  # (item, log_q, weight) of each candidate
        expected = sorted((key(item, weight) for item, _, weight in pool), reverse=True)[:kept_width]
        for triple in _triples(kept, row):
            assert triple in pool, "kept a negative that is not one of the candidates"
            pool.remove(triple)  # each candidate is kept at most once
        assert sorted((key(item, weight) for item, _, weight in _triples(kept, row)), reverse=True) == expected


def _triples(negatives: Negatives, row: int) -> list[tuple[int, float, float]]:
    return list(zip(negatives.items[row].tolist(), negatives.log_q[row].tolist(), negatives.weight[row].tolist()))


def test_dns_keeps_the_largest_ids_of_each_querys_candidates() -> None:
    # Score = item id: the k best of a row's candidates are its k largest ids.
    base = UniformSampler(1000, 16, seed=4)
    twin = UniformSampler(1000, 16, seed=4)
    queries = torch.arange(5)
    positives = torch.zeros(5, dtype=torch.long)
    candidates = twin(queries, positives, _item_id_scorer).items
    kept = TopKSampler(base, 3, seed=0)(queries, positives, _item_id_scorer)
    expected = torch.sort(candidates, dim=1, descending=True).values[:, :3]
    assert torch.equal(torch.sort(kept.items, dim=1, descending=True).values, expected)
    torch.testing.assert_close(kept.log_q, torch.full((5, 3), -math.log(1000)))
    assert kept.unit_weights and bool((kept.weight == 1).all())


def test_shared_candidates_keep_a_per_query_choice() -> None:
    # One shared candidate set, but query 0 likes large ids and query 1 small ones.
    n_items = 50
    table = torch.stack([torch.arange(n_items).float(), -torch.arange(n_items).float()])  # [2, n_items]
    twin = UniformSampler(n_items, 10, seed=2, shared=True)
    queries, positives = torch.tensor([0, 1]), torch.tensor([0, 0])
    candidates = twin(queries, positives, _table_scorer(table))
    assert candidates.shared
    kept = TopKSampler(UniformSampler(n_items, 10, seed=2, shared=True), 2, seed=0)(
        queries, positives, _table_scorer(table)
    )
    drawn = candidates.items[0]
    assert sorted(kept.items[0].tolist()) == sorted(drawn.tolist())[-2:]
    assert sorted(kept.items[1].tolist()) == sorted(drawn.tolist())[:2]


def test_masked_positives_are_never_kept_even_when_best_scored() -> None:
    # User 0's positives are the items 40..49, the best-scored of all; user 1 has none.
    n_items = 50
    rows = [list(range(40, 50)), []]
    twin = UniformSampler(n_items, 30, rows_csr(rows, n_items), seed=6, shared=True)
    queries, positives = torch.tensor([0, 1]), torch.tensor([40, 3])
    candidates = twin(queries, positives, _item_id_scorer)
    masked = candidates.items[0][candidates.weight[0] == 0]
    assert len(masked) > 0 and bool((masked >= 40).all())  # the case this test is about really occurs
    sampler = TopKSampler(UniformSampler(n_items, 30, rows_csr(rows, n_items), seed=6, shared=True), 3, seed=0)
    kept = sampler(queries, positives, _item_id_scorer)
    allowed = sorted(candidates.items[0][candidates.weight[0] > 0].tolist())
    assert sorted(kept.items[0].tolist()) == allowed[-3:]
    assert bool((kept.items[0] < 40).all()) and bool((kept.weight[0] == 1).all())
    # User 1 masks nothing: the three largest ids drawn, positives of user 0 included.
    assert sorted(kept.items[1].tolist()) == sorted(candidates.items[1].tolist())[-3:]


def test_a_row_with_too_few_unmasked_candidates_keeps_masked_ones_with_weight_zero() -> None:
    # 4 items; user 0's positives are 0, 1, 2: of 6 shared candidates at most the 3s are unmasked.
    rows = [[0, 1, 2]]
    twin = UniformSampler(4, 6, rows_csr(rows, 4), seed=1, shared=True)
    queries, positives = torch.tensor([0]), torch.tensor([0])
    candidates = twin(queries, positives, _item_id_scorer)
    n_valid = int((candidates.weight[0] > 0).sum())
    assert n_valid < 5
    kept = TopKSampler(UniformSampler(4, 6, rows_csr(rows, 4), seed=1, shared=True), 5, seed=0)(
        queries, positives, _item_id_scorer
    )
    assert int((kept.weight[0] > 0).sum()) == n_valid  # every unmasked candidate is kept
    assert int((kept.items[0] == 3).sum()) == n_valid
    assert bool((kept.weight[kept.items != 3] == 0).all())


def test_k_at_least_the_candidate_count_returns_the_candidates() -> None:
    base = UniformSampler(20, 4, seed=0)
    twin = UniformSampler(20, 4, seed=0)
    queries, positives = torch.arange(3), torch.zeros(3, dtype=torch.long)
    kept = TopKSampler(base, 4, seed=0)(queries, positives, _item_id_scorer)
    assert torch.equal(kept.items, twin(queries, positives, _item_id_scorer).items)


# --- select ----------------------------------------------------------------------------------------


def test_select_gathers_every_per_negative_field() -> None:
    items = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    negatives = Negatives(
        items=items,
        log_q=torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-5.0, -6.0, -7.0, -8.0]]),
        weight=torch.tensor([[1.0, 0.5, 0.0, 2.0], [3.0, 1.0, 1.0, 4.0]]),
        pos_weight=torch.tensor([7.0, 9.0]),
        extras={
            "per_negative": items.float() / 10,  # [B, M]: follows the selection
            "per_query": torch.tensor([1.0, 2.0]),  # [B]: untouched
            "scalar": torch.tensor(0.25),  # untouched
        },
        positives=torch.tensor([10, 22]),
    )
    chosen = select(negatives, torch.tensor([[3, 0], [2, 2]]))
    assert torch.equal(chosen.items, torch.tensor([[13, 10], [22, 22]]))
    torch.testing.assert_close(chosen.log_q, torch.tensor([[-4.0, -1.0], [-7.0, -7.0]]))
    torch.testing.assert_close(chosen.weight, torch.tensor([[2.0, 1.0], [1.0, 1.0]]))
    torch.testing.assert_close(chosen.pos_weight, torch.tensor([7.0, 9.0]))
    torch.testing.assert_close(chosen.extras["per_negative"], torch.tensor([[1.3, 1.0], [2.2, 2.2]]))
    torch.testing.assert_close(chosen.extras["per_query"], torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(chosen.extras["scalar"], torch.tensor(0.25))
    assert torch.equal(chosen.positives, torch.tensor([10, 22]))
    assert not chosen.unit_weights


def test_select_from_a_shared_view_gives_each_row_its_own_columns() -> None:
    shared = Negatives.unweighted(
        torch.tensor([5, 6, 7]).unsqueeze(0).expand(2, 3), torch.tensor([-1.0, -2.0, -3.0]).unsqueeze(0).expand(2, 3)
    )
    assert shared.shared
    chosen = select(shared, torch.tensor([[2], [0]]))
    assert torch.equal(chosen.items, torch.tensor([[7], [5]]))
    torch.testing.assert_close(chosen.log_q, torch.tensor([[-3.0], [-1.0]]))
    assert chosen.unit_weights and not chosen.shared


# --- config ----------------------------------------------------------------------------------------


def test_with_candidates_sets_the_bases_negative_count() -> None:
    base = UniformConfig(shared=True, exclude_positives=True)
    assert with_candidates(base, 32) == UniformConfig(n_negatives=32, shared=True, exclude_positives=True)
    assert with_candidates(base, None) is base
    mixed = MixedConfig(samplers=[UniformConfig(), UniformConfig()])
    with pytest.raises(ValueError, match="candidates: base sampler 'mixed' has no n_negatives"):
        with_candidates(mixed, 8)


def test_from_config_builds_candidates_from_the_base() -> None:
    train = rows_interactions([[0, 1], [2], [5, 6, 7]], n_items=12)
    sampler = SAMPLERS.build(TopKConfig(k=3, candidates=10), train, 5)
    assert isinstance(sampler, TopKSampler) and sampler.k == 3 and sampler.seed == 5
    base = sampler.base
    assert isinstance(base, UniformSampler)
    assert base.n_negatives == 10 and base.pool == 256 and base.seed == 6  # the default base, its own seed
    queries, positives = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 2, 5, 1])
    kept = sampler(queries, positives, _item_id_scorer)
    assert kept.items.shape == (4, 3)
    # The default base masks each user's training positives: weight 0 exactly on those.
    training_positive = torch.from_numpy(train.csr().toarray() > 0)[queries.unsqueeze(1), kept.items]
    torch.testing.assert_close(kept.weight, (~training_positive).float())


def test_config_rejects_k_above_candidates() -> None:
    with pytest.raises(ValidationError, match=r"k \(5\) must not exceed candidates \(4\)"):
        TopKConfig(k=5, candidates=4)
    assert TopKConfig(k=5, candidates=None).k == 5  # the base's own count decides
