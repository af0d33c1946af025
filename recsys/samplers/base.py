"""What every negative sampler shares: its own seeded generator, and a way to draw without using it up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from recsys.interfaces import Negatives, ScoreFn

__all__ = ["Sampler"]


class Sampler(nn.Module):
    """Base of the negative samplers (``NegativeSampler`` in ``recsys.interfaces``).

    A subclass implements ``forward(queries [B], positives [B], scorer) -> Negatives`` and draws its
    randomness from ``self.generator(device)``, a ``torch.Generator`` seeded once from the experiment's
    seed, so a run's negatives depend on the seed alone. Tables go in buffers (they move with the model);
    learnable parts (a flip model, say) are parameters and train with the model.

    Args:
        n_items: catalogue size.
        seed: seed of the sampler's generator.
    """

    def __init__(self, n_items: int, seed: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.seed = seed
        self._generator: torch.Generator | None = None

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        raise NotImplementedError

    def generator(self, device: torch.device) -> torch.Generator:
        """The sampler's generator on ``device`` (re-created from the seed if the device changed)."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def diagnostics(self) -> dict[str, float]:
        """Figures of the sampler's own (e.g. the mean flip probability of a noise model); none here."""
        return {}

    @contextmanager
    def preserved_random_state(self) -> Iterator[None]:
        """Draw inside this block without changing what training draws next (for probes)."""
        samplers = [module for module in self.modules() if isinstance(module, Sampler)]
        states = [(s, None if s._generator is None else s._generator.get_state()) for s in samplers]
        try:
            yield
        finally:
            for sampler, state in states:
                if state is None:
                    sampler._generator = None  # created inside the block: start afresh from the seed
                else:
                    sampler._generator.set_state(state)  # type: ignore[union-attr]
