"""Negative samplers: ``sampler.name`` -> (config class, builder). Each file is one sampler."""

from __future__ import annotations

from recsys.registry import Component, Registry
from recsys.samplers.ambiguous import AmbiguousConfig, AmbiguousSampler
from recsys.samplers.base import Sampler
from recsys.samplers.in_batch import InBatchConfig, InBatchSampler
from recsys.samplers.mixed import MixedConfig, MixedSampler
from recsys.samplers.mnar import MNARConfig, MNARSampler
from recsys.samplers.noisy_label_robust import NoisyLabelRobustConfig, NoisyLabelRobustSampler
from recsys.samplers.popularity import PopularityConfig, PopularitySampler
from recsys.samplers.topk import TopKConfig, TopKSampler
from recsys.samplers.uniform import UniformConfig, UniformSampler

__all__ = ["SAMPLERS", "Sampler"]

SAMPLERS: Registry[Sampler] = Registry(
    "sampler",
    {
        "uniform": Component(UniformConfig, UniformSampler.from_config),
        "popularity": Component(PopularityConfig, PopularitySampler.from_config),
        "in_batch": Component(InBatchConfig, InBatchSampler.from_config),
        "mixed": Component(MixedConfig, MixedSampler.from_config),
        "topk": Component(TopKConfig, TopKSampler.from_config),
        "ambiguous": Component(AmbiguousConfig, AmbiguousSampler.from_config),
        "noisy_label_robust": Component(NoisyLabelRobustConfig, NoisyLabelRobustSampler.from_config),
        "mnar": Component(MNARConfig, MNARSampler.from_config),
    },
)
