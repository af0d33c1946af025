"""Sampler base: one seeded generator per sampler, and probes that draw without moving training's draws."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.samplers.base import Sampler
from recsys.samplers.in_batch import InBatchSampler
from recsys.samplers.mixed import MixedSampler
from recsys.samplers.mnar import MNARSampler
from recsys.samplers.popularity import PopularitySampler
from recsys.samplers.uniform import UniformSampler

COUNTS = np.array([9, 0, 3, 1, 6, 2, 0, 4, 1, 1] * 10, dtype=np.int64)
QUERIES = torch.tensor([0, 1, 2, 1])
POSITIVES = torch.tensor([3, 8, 8, 0])


def _draw(sampler: Sampler) -> torch.Tensor:
    return sampler(QUERIES, POSITIVES, scorer=lambda items: torch.zeros(items.shape)).items


def _uniform() -> Sampler:
    return UniformSampler(100, 8, seed=1)


def _mixed() -> Sampler:
    positives = sp.csr_array(np.eye(3, 100, dtype=np.float32))
    return MixedSampler(
        [
            UniformSampler(100, 4, positives, seed=2),
            PopularitySampler(COUNTS, 3, alpha=0.75, seed=3),
            InBatchSampler(COUNTS, 2, seed=4),
            MNARSampler(UniformSampler(100, 2, seed=5), np.full(100, 0.5), seed=6),  # nested twice
        ],
        seed=7,
    )


SAMPLERS = pytest.mark.parametrize("build", [_uniform, _mixed], ids=["uniform", "mixed"])


def test_generator_is_seeded_once_and_reused() -> None:
    sampler = _uniform()
    generator = sampler.generator(torch.device("cpu"))
    assert sampler.generator(torch.device("cpu")) is generator
    expected = torch.Generator().manual_seed(1)
    assert torch.equal(torch.rand(5, generator=generator), torch.rand(5, generator=expected))


@SAMPLERS
def test_draws_inside_the_block_do_not_change_the_next_ones(build) -> None:
    probed, untouched = build(), build()
    assert torch.equal(_draw(probed), _draw(untouched))  # both have drawn once: generators exist
    with probed.preserved_random_state():
        inside = [_draw(probed) for _ in range(3)]
    assert not torch.equal(inside[0], inside[1])  # the block really drew
    assert torch.equal(inside[0], _draw(untouched))  # ... the same as training would next
    assert torch.equal(_draw(probed), inside[0])  # and training still draws it next
    assert torch.equal(_draw(probed), _draw(untouched))


@SAMPLERS
def test_block_restores_state_when_the_probe_raises(build) -> None:
    probed, untouched = build(), build()
    _draw(probed), _draw(untouched)
    with pytest.raises(RuntimeError, match="probe failed"):
        with probed.preserved_random_state():
            _draw(probed)
            raise RuntimeError("probe failed")
    assert torch.equal(_draw(probed), _draw(untouched))


@SAMPLERS
def test_a_probe_before_the_first_draw_does_not_change_training(build) -> None:
    """A probe may run before any training step (e.g. a validation pass first); the generators it
    creates must not leave training's first draws moved on."""
    probed, untouched = build(), build()
    with probed.preserved_random_state():
        _draw(probed)
    assert torch.equal(_draw(probed), _draw(untouched))
