"""SamplerProbe: hardness, false-negative rate and negative popularity, checked exactly.

The model's score is the item id (the hardest negative is the largest id), and ``_Oracle`` is a sampler
that returns negatives fixed in advance per user, so every figure has a number written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from recsys.data.interactions import Interactions
from recsys.interfaces import Negatives, ScoreFn
from recsys.samplers.ambiguous import AmbiguousSampler
from recsys.samplers.base import Sampler
from recsys.samplers.diagnostics import SamplerProbe
from recsys.samplers.mnar import MNARSampler
from recsys.samplers.noisy_label_robust import NoisyLabelRobustSampler
from recsys.samplers.uniform import UniformSampler
from tests.factories import rows_interactions

CPU = torch.device("cpu")
N_ITEMS = 10


def _interactions(rows: list[list[int]], n_items: int = N_ITEMS) -> Interactions:
    return rows_interactions(rows, n_items)


# Item counts in train: item 0: 1, item 1: 2, item 2: 3, item 4: 1, the others 0.
TRAIN = _interactions([[0, 1, 2], [1, 2], [2, 4]])
VALID = _interactions([[9], [7, 8], [6]])


class _Oracle(Sampler):
    """Returns ``negatives[user]`` for each query: a sampler whose answer the test knows."""

    def __init__(self, negatives: list[list[int]], n_items: int = N_ITEMS) -> None:
        super().__init__(n_items, seed=0)
        self.table = torch.tensor(negatives)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        items = self.table[queries]
        return Negatives.unweighted(items, torch.zeros(items.shape))


def _score_is_item_id(users: Tensor, items: Tensor) -> Tensor:
    return items.float()


def _probe(**options) -> SamplerProbe:
    # More pairs and reference items than exist: every training pair is probed, every item is a reference.
    return SamplerProbe(TRAIN, VALID, **{"n_pairs": 100, "n_reference": 100, **options})


def test_each_figure_by_hand() -> None:
    # Negatives per user, with (rank from the bottom among the 10 items) / 10, valid hits, train counts:
    #   user 0 (3 pairs): 9, 5, 4 -> 1.0 + 0.6 + 0.5 = 2.1;  9 is a valid positive: 1;  counts 0 + 0 + 1 = 1
    #   user 1 (2 pairs): 8, 3, 0 -> 0.9 + 0.4 + 0.1 = 1.4;  8 is a valid positive: 1;  counts 0 + 0 + 1 = 1
    #   user 2 (2 pairs): 7, 1, 2 -> 0.8 + 0.2 + 0.3 = 1.3;  none is valid:          0;  counts 0 + 2 + 3 = 5
    # Over the 7 x 3 = 21 negatives:
    #   hardness = (3 * 2.1 + 2 * 1.4 + 2 * 1.3) / 21 = 11.7 / 21 = 0.5571428571
    #   false_negative_rate = (3 + 2 + 0) / 21 = 0.2380952381
    #   negative_popularity = (3 * 1 + 2 * 1 + 2 * 5) / 21 = 15 / 21 = 0.7142857143
    oracle = _Oracle([[9, 5, 4], [8, 3, 0], [7, 1, 2]])
    figures = _probe().measure(oracle, _score_is_item_id, CPU)
    assert figures == pytest.approx(
        {"hardness": 0.5571428571, "false_negative_rate": 0.2380952381, "negative_popularity": 0.7142857143}, abs=1e-7
    )


@pytest.mark.parametrize(
    ("negative", "score", "hardness"),
    [
        (9, _score_is_item_id, 1.0),  # outscores every reference item
        (0, _score_is_item_id, 0.1),  # only itself scores at or below it
        (9, lambda users, items: -items.float(), 0.1),  # the model now prefers small ids
        (0, lambda users, items: -items.float(), 1.0),
        (5, lambda users, items: items.float() + 10 * users.unsqueeze(1), 0.6),  # per-user offsets do not matter
    ],
)
def test_hardness_is_the_rank_from_the_bottom(negative: int, score, hardness: float) -> None:
    figures = _probe().measure(_Oracle([[negative]] * 3), score, CPU)
    assert figures["hardness"] == pytest.approx(hardness, abs=1e-7)


def test_hardness_against_a_sample_of_reference_items() -> None:
    # With 4 random reference items the largest id still outscores each of them.
    figures = _probe(n_reference=4).measure(_Oracle([[9]] * 3), _score_is_item_id, CPU)
    assert figures["hardness"] == 1.0


def test_false_negative_rate_and_popularity_extremes() -> None:
    every_valid = _probe().measure(_Oracle([[9, 9], [7, 8], [6, 6]]), _score_is_item_id, CPU)
    assert every_valid["false_negative_rate"] == 1.0 and every_valid["negative_popularity"] == 0.0
    most_popular = _probe().measure(_Oracle([[2, 2], [2, 2], [2, 2]]), _score_is_item_id, CPU)
    assert most_popular["false_negative_rate"] == 0.0 and most_popular["negative_popularity"] == 3.0


def test_shared_negatives_are_measured_per_query() -> None:
    # A shared uniform draw of 6 items: every query's hardness is mean((item + 1) / 10) of that draw.
    drawn = UniformSampler(N_ITEMS, 6, seed=5, shared=True)(torch.arange(2), torch.zeros(2, dtype=torch.long), None)
    figures = _probe().measure(UniformSampler(N_ITEMS, 6, seed=5, shared=True), _score_is_item_id, CPU)
    items = drawn.items[0].double()
    assert figures["hardness"] == pytest.approx(((items + 1) / 10).mean().item(), abs=1e-7)
    counts = torch.tensor([1.0, 2, 3, 0, 1, 0, 0, 0, 0, 0])
    assert figures["negative_popularity"] == pytest.approx(counts[drawn.items[0]].mean().item(), abs=1e-7)


def test_the_samplers_own_diagnostics_are_reported() -> None:
    # MNAR with theta = [0.5, 1] (counts [1, 4], eta 0.5): inverse propensities [2, 1].
    sampler = MNARSampler(UniformSampler(N_ITEMS, 2, seed=0), np.array([0.5] + [1.0] * (N_ITEMS - 1)), seed=0)
    figures = _probe().measure(sampler, _score_is_item_id, CPU)
    assert figures["max_inverse_propensity"] == pytest.approx(2.0)
    assert figures["mean_inverse_propensity"] == pytest.approx(1.1)
    assert {"hardness", "false_negative_rate", "negative_popularity"} <= set(figures)


def test_measuring_twice_gives_the_same_figures() -> None:
    sampler = UniformSampler(N_ITEMS, 4, seed=2)
    sampler(torch.arange(3), torch.zeros(3, dtype=torch.long), None)  # training has drawn before
    probe = _probe()
    assert probe.measure(sampler, _score_is_item_id, CPU) == probe.measure(sampler, _score_is_item_id, CPU)


# --- the probe does not change what training draws next --------------------------------------------


def _ambiguous(seed: int) -> AmbiguousSampler:
    return AmbiguousSampler(UniformSampler(N_ITEMS, 6, seed=seed + 1, shared=True), 2, 0.5, 0.0, seed)


def _uniform(seed: int) -> UniformSampler:
    return UniformSampler(N_ITEMS, 4, TRAIN.csr(), seed=seed)


@pytest.mark.parametrize("build", [_uniform, _ambiguous], ids=["uniform", "ambiguous"])
def test_measure_keeps_the_training_draws(build) -> None:
    queries, positives = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 1])
    scorer = lambda items: items.float()  # noqa: E731
    probed, twin = build(7), build(7)
    probe = _probe()
    assert torch.equal(probed(queries, positives, scorer).items, twin(queries, positives, scorer).items)
    probe.measure(probed, _score_is_item_id, CPU)
    for _ in range(3):
        assert torch.equal(probed(queries, positives, scorer).items, twin(queries, positives, scorer).items)


@pytest.mark.parametrize("build", [_uniform, _ambiguous], ids=["uniform", "ambiguous"])
def test_measure_before_the_first_training_draw_keeps_the_training_draws(build) -> None:
    """A probe run before training has drawn (Lightning's sanity check, with
    ``train.num_sanity_val_steps`` > 0) must not shift the first training negatives."""
    queries, positives = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 1])
    scorer = lambda items: items.float()  # noqa: E731
    probed, twin = build(7), build(7)
    _probe().measure(probed, _score_is_item_id, CPU)
    assert torch.equal(probed(queries, positives, scorer).items, twin(queries, positives, scorer).items)


def test_probe_draws_in_eval_mode_do_not_count_as_flip_probability() -> None:
    sampler = NoisyLabelRobustSampler(UniformSampler(N_ITEMS, 2, seed=1), n_users=3, rank=4, flip_l2=0.0, seed=0)
    drawn = sampler(torch.tensor([0, 1]), torch.tensor([0, 1]), None)  # training
    expected = torch.sigmoid(drawn.extras["flip_logit_negative"]).mean().item()
    sampler.eval()  # as during Lightning's validation, where the probe runs
    figures = _probe().measure(sampler, _score_is_item_id, CPU)
    assert figures["flip_probability"] == pytest.approx(expected, rel=1e-6)
    sampler.train()
    assert sampler.diagnostics() == {}  # the probe's own draws were not counted
