"""What every negative sampler shares: its own seeded generator, a way to draw without using it up, and
the scorer a model hands it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from recsys.interfaces import Negatives, ScoreFn
from recsys.samplers.pool import block_rows

__all__ = ["BoundScorer", "Sampler"]


class BoundScorer:
    """The ``ScoreFn`` a model hands its sampler for one batch: ``score(queries, items)`` with the batch's
    ``queries [B]`` bound, plus ``blocks``, the scores of a blocked pool (see ``recsys.samplers.pool``).

    Args:
        score: ``(queries [B], items [B, C]) -> [B, C]``, without gradients.
        queries: ``[B]``.
        score_blocks: ``(queries [B], pool [G, N]) -> [B, N]`` when the model has a faster way than
            scoring each row's block as ``[B, N]`` items (a dot-product model: one batched GEMM).
    """

    __slots__ = ("queries", "score", "score_blocks")

    def __init__(
        self,
        score: Callable[[Tensor, Tensor], Tensor],
        queries: Tensor,
        score_blocks: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        self.score = score
        self.queries = queries
        self.score_blocks = score_blocks

    def __call__(self, items: Tensor) -> Tensor:
        """``items [B, C]`` -> ``[B, C]``."""
        return self.score(self.queries, items)

    def blocks(self, pool: Tensor) -> Tensor:
        """``pool [G, N]`` -> ``[B, N]``: row ``b`` scored against block ``block_rows(B, G)[b]``."""
        if self.score_blocks is not None:
            return self.score_blocks(self.queries, pool)
        return self.score(self.queries, pool[block_rows(len(self.queries), pool.shape[0], pool.device)])


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
        self._saved_generator: dict[str, Any] | None = None  # a resumed fit's, set at the next draw

    def forward(self, queries: Tensor, positives: Tensor, scorer: ScoreFn) -> Negatives:
        raise NotImplementedError

    def generator(self, device: torch.device) -> torch.Generator:
        """The sampler's generator on ``device`` (re-created from the seed if the device changed)."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            saved, self._saved_generator = self._saved_generator, None
            if saved is not None and saved["device"] == device.type:
                self._generator.set_state(saved["state"])
        return self._generator

    def generator_state(self) -> dict[str, Any] | None:
        """The generator's state and device type (for a resumable checkpoint); None before any draw."""
        if self._generator is None:
            return None
        return {"device": self._generator.device.type, "state": self._generator.get_state()}

    def restore_generator(self, saved: dict[str, Any]) -> None:
        """Continue from ``generator_state()``'s result at the next draw. A state saved on another kind
        of device cannot be carried over: the generator then starts afresh from the seed."""
        self._generator, self._saved_generator = None, saved

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
