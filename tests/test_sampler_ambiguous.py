"""AmbiguousSampler (SimANS): picks with p_j ∝ exp(-a (s_j - s_pos - b)^2), masked candidates skipped.

The candidates come from a real base sampler; a twin of it (same class, same seed) shows which ones
the wrapped base drew. Rows with hand-chosen candidates come from ``_FixedCandidates``, a sampler
that returns the candidates it was given.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from factories import rows_csr
from pydantic import ValidationError
from torch import Tensor

from recsys.interfaces import Negatives, ScoreFn
from recsys.samplers import SAMPLERS
from recsys.samplers.ambiguous import AmbiguousConfig, AmbiguousSampler
from recsys.samplers.base import Sampler
from recsys.samplers.uniform import UniformSampler
from tests.factories import rows_interactions


class _FixedCandidates(Sampler):
    """Returns the same ``[M]`` candidates (and weights) for every query."""

    def __init__(self, n_items: int, items: list[int], weight: list[float] | None = None) -> None:
        super().__init__(n_items, seed=0)
        self.items = torch.tensor(items)
        self.weight = None if weight is None else torch.tensor(weight)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        shape = (len(queries), len(self.items))
        items = self.items.unsqueeze(0).expand(shape)
        log_q = torch.full(shape, -math.log(self.n_items))
        if self.weight is None:
            return Negatives.unweighted(items, log_q)
        return Negatives(items, log_q, self.weight.unsqueeze(0).expand(shape), torch.ones(len(queries)))


def _half_id_scorer(items: Tensor) -> Tensor:
    """Every query scores item ``i`` as ``i / 2``."""
    return items.float() / 2


def _kernel(scores: np.ndarray, positive_score: float, a: float, b: float) -> np.ndarray:
    """SimANS's pick probabilities, written independently of the sampler."""
    weights = np.exp(-a * (scores - positive_score - b) ** 2)
    return weights / weights.sum()


def test_selection_logits_by_hand() -> None:
    # a = 0.5, b = 1, s_pos = 1: -0.5 * (s - 2)^2 for s = 0, 2, 3 -> -2, 0, -0.5
    sampler = AmbiguousSampler(_FixedCandidates(5, [0]), 1, a=0.5, b=1.0, seed=0)
    logits = sampler.selection_logits(torch.tensor([[0.0, 2.0, 3.0]]), torch.tensor([1.0]))
    torch.testing.assert_close(logits, torch.tensor([[-2.0, 0.0, -0.5]]))


@pytest.mark.parametrize(("b", "peak"), [(3.0, 8), (-3.0, 2), (0.0, 5)])
def test_picks_peak_at_the_positive_score_plus_b(b: float, peak: int) -> None:
    # Scores are item ids, the positive is item 5: with a sharp kernel every pick is item 5 + b.
    sampler = AmbiguousSampler(_FixedCandidates(20, list(range(20))), 1, a=50.0, b=b, seed=0)
    queries = torch.zeros(200, dtype=torch.long)
    picked = sampler(queries, torch.full((200,), 5), lambda items: items.float())
    assert bool((picked.items == peak).all())


def test_single_pick_distribution_matches_the_kernel() -> None:
    """N = 1 from 12 shared uniform candidates, 20000 queries: chi-square against the formula."""
    n_items, width, batch, a, b = 30, 12, 20_000, 0.5, 1.0
    queries = torch.zeros(batch, dtype=torch.long)
    positives = torch.full((batch,), 10)  # s_pos = 5: the kernel peaks at score 6, item 12
    candidates = UniformSampler(n_items, width, seed=8, shared=True)(queries, positives, _half_id_scorer)
    picked = AmbiguousSampler(UniformSampler(n_items, width, seed=8, shared=True), 1, a, b, seed=3)(
        queries, positives, _half_id_scorer
    )
    drawn = candidates.items[0].numpy()  # the one shared candidate set; an item may come twice
    assert np.isin(picked.items.numpy(), drawn).all()
    counts = np.bincount(picked.items[:, 0].numpy(), minlength=n_items)
    per_column = _kernel(drawn / 2, 5.0, a, b)
    expected = np.bincount(drawn, weights=per_column, minlength=n_items)  # duplicates add up
    support = expected > 0
    assert counts[~support].sum() == 0
    assert scipy.stats.chisquare(counts[support], batch * expected[support]).pvalue > 1e-3
    # The test tells the conventions apart: the official code's sign of b (our -b) is rejected.
    flipped = np.bincount(drawn, weights=_kernel(drawn / 2, 5.0, a, -b), minlength=n_items)
    assert scipy.stats.chisquare(counts[support], batch * flipped[support] / flipped[support].sum()).pvalue < 1e-3


def test_single_pick_log_q_is_base_log_q_plus_log_m_p() -> None:
    # Candidates 0, 2, 4, 6 (scores 0, 1, 2, 3), s_pos = 1, a = 1, b = 0:
    # kernel exp(-(s - 1)^2) = [e^-1, 1, e^-1, e^-4], sum 1.7540745, so
    # p = [0.2097285, 0.5701012, 0.2097285, 0.0104418] and log(4 p) = [-0.1756470, 0.8243530, -0.1756470, -3.1756470].
    sampler = AmbiguousSampler(_FixedCandidates(10, [0, 2, 4, 6]), 1, a=1.0, b=0.0, seed=1)
    picked = sampler(torch.zeros(400, dtype=torch.long), torch.full((400,), 2), _half_id_scorer)
    log_m_p = {0: -0.1756470, 2: 0.8243530, 4: -0.1756470, 6: -3.1756470}
    expected = torch.tensor([[log_m_p[item] - math.log(10)] for item in picked.items[:, 0].tolist()])
    torch.testing.assert_close(picked.log_q, expected, atol=1e-5, rtol=0)
    assert set(picked.items[:, 0].tolist()) >= {0, 2, 4}  # the check above saw several candidates


def test_masked_candidates_are_never_picked() -> None:
    # User 0's positives are the items near the kernel's peak; user 1 has none.
    n_items, width, batch = 30, 20, 2000
    rows = [list(range(10, 15)), []]
    queries = torch.tensor([0, 1]).repeat(batch // 2)
    positives = torch.full((batch,), 10)
    candidates = UniformSampler(n_items, width, rows_csr(rows, n_items), seed=4, shared=True)(
        queries, positives, _half_id_scorer
    )
    assert bool((candidates.weight[0] == 0).any())  # some candidates of user 0 are masked
    base = UniformSampler(n_items, width, rows_csr(rows, n_items), seed=4, shared=True)
    sampler = AmbiguousSampler(base, 3, 0.5, 0.0, seed=0)
    picked = sampler(queries, positives, _half_id_scorer)
    user0 = picked.items[queries == 0]
    assert not bool(((user0 >= 10) & (user0 < 15)).any())
    assert bool((picked.weight == 1).all())
    user1 = picked.items[queries == 1]
    assert bool(((user1 >= 10) & (user1 < 15)).any())  # unmasked for user 1, and picked often


def test_with_enough_unmasked_candidates_only_those_are_picked() -> None:
    # Candidates 0..5; only 1 and 4 are unmasked; 2 picks are asked for: exactly those two.
    base = _FixedCandidates(6, [0, 1, 2, 3, 4, 5], weight=[0, 1, 0, 0, 1, 0])
    picked = AmbiguousSampler(base, 2, a=0.5, b=0.0, seed=0)(
        torch.zeros(50, dtype=torch.long), torch.full((50,), 3), lambda items: items.float()
    )
    assert bool((torch.sort(picked.items, dim=1).values == torch.tensor([1, 4])).all())
    assert bool((picked.weight == 1).all())


def test_a_row_with_too_few_unmasked_candidates_picks_all_of_them_first() -> None:
    """Masked candidates fill a row only after every unmasked one is picked (as TopK keeps them).

    Candidates 0..5, only 1 and 4 unmasked, 3 picks, kernel peaked on the masked 3 (s_pos = 3, b = 0).
    """
    base = _FixedCandidates(6, [0, 1, 2, 3, 4, 5], weight=[0, 1, 0, 0, 1, 0])
    picked = AmbiguousSampler(base, 3, a=0.5, b=0.0, seed=0)(
        torch.zeros(50, dtype=torch.long), torch.full((50,), 3), lambda items: items.float()
    )
    for items, weight in zip(picked.items.tolist(), picked.weight.tolist()):
        assert len(set(items)) == 3  # distinct picks
        assert {1, 4} <= set(items), f"picked {items}: an unmasked candidate left out for masked ones"
        assert sorted(weight) == [0.0, 1.0, 1.0]  # one masked pick, with weight 0


def test_several_picks_are_distinct_candidates() -> None:
    sampler = AmbiguousSampler(_FixedCandidates(40, list(range(0, 40, 5))), 5, a=0.5, b=0.0, seed=2)
    picked = sampler(torch.zeros(100, dtype=torch.long), torch.full((100,), 20), lambda items: items.float())
    assert picked.items.shape == picked.log_q.shape == (100, 5)
    assert all(len(set(row)) == 5 for row in picked.items.tolist())
    assert bool((picked.items % 5 == 0).all())


def test_a_far_away_kernel_still_picks_distinct_items() -> None:
    # Every candidate is scored ~50 away from the peak: the kernel underflows, the floor keeps picks valid.
    sampler = AmbiguousSampler(_FixedCandidates(200, list(range(100, 110))), 4, a=0.5, b=0.0, seed=0)
    picked = sampler(torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long), lambda items: items.float())
    assert all(len(set(row)) == 4 for row in picked.items.tolist())
    assert bool(torch.isfinite(picked.log_q).all())


def test_same_seed_same_picks() -> None:
    def draw(seed: int) -> Tensor:
        sampler = AmbiguousSampler(UniformSampler(50, 16, seed=1), 2, a=0.5, b=0.0, seed=seed)
        return sampler(torch.arange(8), torch.arange(8), _half_id_scorer).items

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_from_config_sets_the_candidate_count_and_seeds() -> None:
    train = rows_interactions([[1, 2], [3]], 40)
    sampler = SAMPLERS.build(AmbiguousConfig(n_negatives=3, candidates=16, a=2.0, b=-1.0), train, 7)
    assert isinstance(sampler, AmbiguousSampler)
    assert (sampler.n_negatives, sampler.a, sampler.b, sampler.seed) == (3, 2.0, -1.0, 7)
    assert sampler.base.n_negatives == 16 and sampler.base.seed == 8 and sampler.base.pool == 256
    picked = sampler(torch.tensor([0, 1]), torch.tensor([1, 3]), _half_id_scorer)
    assert picked.items.shape == (2, 3)
    with pytest.raises(ValidationError, match=r"n_negatives \(5\) must not exceed candidates \(4\)"):
        AmbiguousConfig(n_negatives=5, candidates=4)
    with pytest.raises(ValidationError):
        AmbiguousConfig(a=0.0)
