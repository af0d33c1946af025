"""A mixture: the negatives of several samplers side by side."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from recsys.data.interactions import Interactions
from recsys.interfaces import Negatives, ScoreFn, Section
from recsys.samplers.base import Sampler
from recsys.samplers.nested import NestedSampler

__all__ = ["MixedConfig", "MixedSampler"]


class MixedConfig(Section):
    """``sampler.name: mixed`` with ``samplers: [{name: ...}, ...]``."""

    name: Literal["mixed"] = "mixed"
    samplers: list[NestedSampler] = Field(min_length=2)


class MixedSampler(Sampler):
    """Concatenates its parts' negatives along ``N`` (mixed negative sampling, Yang et al., WWW 2020;
    TRON's shared uniform + in-batch negatives). Each negative keeps its own sampler's ``log_q`` and
    weight, so a log-Q correction corrects each by the proposal that drew it. ``pos_weight`` is the
    product of the parts' (each is 1 unless a part reweights positives).

    Args:
        parts: the samplers to combine.
        seed: generator seed (the parts have their own).
    """

    def __init__(self, parts: list[Sampler], seed: int) -> None:
        super().__init__(parts[0].n_items, seed)
        self.parts = nn.ModuleList(parts)

    @classmethod
    def from_config(cls, config: MixedConfig, train: Interactions, seed: int) -> MixedSampler:
        from recsys.samplers import SAMPLERS

        # Distinct seeds per part: two identical parts must not draw identical negatives.
        parts = [SAMPLERS.build(part, train, seed + 7919 * (index + 1)) for index, part in enumerate(config.samplers)]
        return cls(parts, seed)

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        drawn = [part(queries, positives, scorer) for part in self.parts]
        extras: dict[str, Tensor] = {}
        for negatives in drawn:
            extras.update(negatives.extras)
        # A part's pool layout does not describe the joined negatives.
        extras.pop("pool", None)
        extras.pop("pool_index", None)
        extras.pop("pool_blocks", None)
        pos_weight = drawn[0].pos_weight
        for negatives in drawn[1:]:
            pos_weight = pos_weight * negatives.pos_weight
        batch = queries.shape[0]

        def join(field: str) -> Tensor:
            values = [getattr(n, field) for n in drawn]
            if batch > 1 and all(v.stride(0) == 0 for v in values):
                # Shared in every part: join the single rows and view them over the batch again.
                return torch.cat([v[0] for v in values]).unsqueeze(0).expand(batch, -1)
            return torch.cat([v.expand(batch, -1) for v in values], dim=1)

        return Negatives(
            items=join("items"),
            log_q=join("log_q"),
            weight=join("weight"),
            pos_weight=pos_weight,
            extras=extras,
            unit_weights=all(n.unit_weights for n in drawn),
        )

    def diagnostics(self) -> dict[str, float]:
        figures: dict[str, float] = {}
        for index, part in enumerate(self.parts):
            figures.update({f"part{index}/{key}": value for key, value in part.diagnostics().items()})
        return figures
