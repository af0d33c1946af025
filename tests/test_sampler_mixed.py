"""MixedSampler: its parts' negatives side by side, each with its own log_q and weight; shared parts
stay shared; distinct seeds per part."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from factories import rows_csr, rows_interactions
from pydantic import ValidationError

from recsys.samplers import SAMPLERS
from recsys.samplers.base import Sampler
from recsys.samplers.in_batch import InBatchSampler
from recsys.samplers.mixed import MixedConfig, MixedSampler
from recsys.samplers.mnar import MNARSampler
from recsys.samplers.popularity import PopularitySampler
from recsys.samplers.uniform import UniformSampler

COUNTS = np.array([9, 0, 3, 1, 6, 2, 0, 4, 1, 1], dtype=np.int64)


QUERIES = torch.tensor([2, 0, 1, 0, 3])
POSITIVES = torch.tensor([0, 2, 4, 2, 7])
ROWS = [[0, 5], [2], [4, 7, 8], []]  # training positives of users 0..3


def _draw(sampler: Sampler):
    return sampler(QUERIES, POSITIVES, scorer=lambda items: torch.zeros(items.shape))


def _parts(kinds: list[str]) -> list[Sampler]:
    """Fresh samplers, so that two calls build twins that draw the same."""
    build = {
        "uniform": lambda: UniformSampler(10, 3, seed=1),
        "popularity": lambda: PopularitySampler(COUNTS, 2, alpha=1.0, seed=2),
        "in_batch": lambda: InBatchSampler(COUNTS, None, seed=3),
        "shared": lambda: UniformSampler(10, 4, seed=4, shared=True),
        "shared_weighted": lambda: UniformSampler(10, 6, rows_csr(ROWS, 10), seed=5, shared=True),
        "shared_other": lambda: UniformSampler(10, 5, seed=6, shared=True, exclude_batch_positives=True),
    }
    return [build[kind]() for kind in kinds]


def _joined(kinds: list[str], field: str) -> torch.Tensor:
    """The expected mixture field: each twin part's own field, concatenated along N."""
    return torch.cat([getattr(_draw(part), field).expand(len(QUERIES), -1) for part in _parts(kinds)], dim=1)


# --- concatenation ---------------------------------------------------------------------------------


def test_parts_are_concatenated_in_order_with_their_own_log_q() -> None:
    kinds = ["uniform", "popularity", "in_batch"]
    negatives = _draw(MixedSampler(_parts(kinds), seed=0))
    assert negatives.items.shape == (5, 3 + 2 + 5)  # in_batch: all 5 positions, the own one weighted 0
    assert not negatives.shared
    assert torch.equal(negatives.items, _joined(kinds, "items"))
    torch.testing.assert_close(negatives.log_q, _joined(kinds, "log_q"))
    # Each block carries its own proposal: uniform, count/sum, count/sum of the batch's positives.
    torch.testing.assert_close(negatives.log_q[:, :3], torch.full((5, 3), -math.log(10)))
    frequency = torch.from_numpy(COUNTS / COUNTS.sum()).float()
    torch.testing.assert_close(negatives.log_q[:, 3:], torch.log(frequency[negatives.items[:, 3:]]))
    assert not negatives.unit_weights
    assert bool((negatives.weight[:, :5] == 1).all()) and torch.equal(negatives.weight[:, 5:], 1 - torch.eye(5))
    assert negatives.pos_weight.shape == (5,) and bool((negatives.pos_weight == 1).all())


def test_per_part_weights_are_kept_and_pos_weights_multiply() -> None:
    def parts() -> list[Sampler]:
        weighted = UniformSampler(10, 6, rows_csr(ROWS, 10), seed=5, shared=True)  # weight 0 on own positives
        mnar_a = MNARSampler(UniformSampler(10, 2, seed=7), np.linspace(0.1, 1.0, 10), seed=8)
        mnar_b = MNARSampler(UniformSampler(10, 1, seed=9), np.full(10, 0.5), seed=10)
        return [weighted, mnar_a, mnar_b]

    negatives = _draw(MixedSampler(parts(), seed=0))
    separately = [_draw(part) for part in parts()]
    assert not negatives.unit_weights
    expected_weight = torch.cat([n.weight.expand(5, -1) for n in separately], dim=1)
    assert torch.equal(negatives.weight, expected_weight)
    assert bool((negatives.weight[:, :6] == 0).any())  # the shared part's zeros survived
    expected_pos_weight = 1.0 / torch.from_numpy(np.linspace(0.1, 1.0, 10)).float()[POSITIVES] * 2.0
    torch.testing.assert_close(negatives.pos_weight, expected_pos_weight)


# --- shared parts ----------------------------------------------------------------------------------


def test_shared_parts_stay_one_shared_view() -> None:
    kinds = ["shared", "shared_other"]
    negatives = _draw(MixedSampler(_parts(kinds), seed=0))
    assert negatives.shared
    assert negatives.items.shape == (5, 9)
    for field in ("items", "log_q", "weight"):
        assert getattr(negatives, field).stride(0) == 0, field
    assert torch.equal(negatives.items, _joined(kinds, "items"))
    torch.testing.assert_close(negatives.log_q, _joined(kinds, "log_q"))
    assert not set(negatives.items[0, 4:].tolist()) & set(POSITIVES.tolist())
    assert negatives.unit_weights


def test_shared_parts_keep_each_querys_weights() -> None:
    """A shared part with exclude_positives shares its items but not its weights (each query's own
    positives get 0); joining shared parts must keep every row's weights, not the first row's."""
    kinds = ["shared_weighted", "shared"]
    negatives = _draw(MixedSampler(_parts(kinds), seed=0))
    assert torch.equal(negatives.items, _joined(kinds, "items"))
    items = negatives.items[0].tolist()
    expected = torch.tensor(
        [[0.0 if item in ROWS[user] else 1.0 for item in items[:6]] + [1.0] * 4 for user in QUERIES.tolist()]
    )
    assert torch.equal(negatives.weight, expected)


def test_shared_and_per_row_parts_are_materialised() -> None:
    kinds = ["shared_weighted", "uniform", "shared", "in_batch"]
    negatives = _draw(MixedSampler(_parts(kinds), seed=0))
    assert not negatives.shared
    assert negatives.items.shape == (5, 6 + 3 + 4 + 5)
    assert torch.equal(negatives.items, _joined(kinds, "items"))
    torch.testing.assert_close(negatives.log_q, _joined(kinds, "log_q"))
    assert torch.equal(negatives.weight, _joined(kinds, "weight"))
    # The shared blocks (all but the uniform one) are the same in every row, the per-row one is not.
    assert bool((negatives.items[:, :6] == negatives.items[0, :6]).all())
    assert bool((negatives.items[:, 9:] == negatives.items[0, 9:]).all())
    assert not bool((negatives.items[:, 6:9] == negatives.items[0, 6:9]).all())
    assert not negatives.unit_weights


# --- seeds and config ------------------------------------------------------------------------------


def _mixed_config(n_negatives: int = 5) -> MixedConfig:
    return MixedConfig(
        samplers=[{"name": "uniform", "n_negatives": n_negatives}, {"name": "uniform", "n_negatives": n_negatives}]
    )


def test_identical_parts_from_config_draw_differently() -> None:
    train = rows_interactions(ROWS, n_items=1000)
    sampler = SAMPLERS.build(_mixed_config(20), train, 3)
    assert isinstance(sampler, MixedSampler) and len(sampler.parts) == 2
    assert len({part.seed for part in sampler.parts} | {sampler.seed}) == 3
    negatives = _draw(sampler)
    assert negatives.items.shape == (5, 40)
    assert not torch.equal(negatives.items[:, :20], negatives.items[:, 20:])


def test_same_seed_same_mixture_different_seed_different() -> None:
    train = rows_interactions(ROWS, n_items=1000)
    first, again, other = (_draw(MixedSampler.from_config(_mixed_config(), train, seed)).items for seed in (1, 1, 2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_mixed_config_needs_two_parts_and_validates_each() -> None:
    with pytest.raises(ValidationError):
        MixedConfig(samplers=[{"name": "uniform"}])
    with pytest.raises(ValidationError, match="unknown sampler"):
        MixedConfig(samplers=[{"name": "uniform"}, {"name": "no_such_sampler"}])
    with pytest.raises(ValidationError):
        MixedConfig(samplers=[{"name": "uniform"}, {"name": "uniform", "n_negativs": 3}])
