"""Negative samplers: ``sampler.name`` -> (config class, builder). Each file is one sampler."""

from __future__ import annotations

from recsys.registry import Component, Registry
from recsys.samplers.uniform import UniformConfig, UniformSampler

__all__ = ["SAMPLERS"]

SAMPLERS = Registry(
    "sampler",
    {
        "uniform": Component(UniformConfig, UniformSampler.from_config),
    },
)
