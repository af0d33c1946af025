"""Training written once: batch -> sampler -> scores -> loss; evaluation through the evaluator.

A model file subclasses ``RecommenderModule`` (or ``DotProductModule``) and defines only its
representation and scoring. The sampler, loss and evaluator are injected (``TrainingParts``); a model
never knows which ones it trains with.
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor, nn

from recsys.data.interactions import Interactions
from recsys.embeddings import lookup
from recsys.interfaces import Loss, Negatives, RankingBatch, RankingEvaluator
from recsys.models.batched_dot import batched_dot
from recsys.models.gathered_dot import gathered_dot
from recsys.models.optimizers import OptimizerName, build_optimizer
from recsys.samplers.base import BoundScorer, Sampler
from recsys.samplers.diagnostics import SamplerProbe
from recsys.samplers.pool import block_rows, pooled

__all__ = ["DotProductModule", "RecommenderModule", "TrainingParts"]

_GENERATORS = "recsys_sampler_generators"  # the checkpoint key of the samplers' generator states


@dataclass
class TrainingParts:
    """Everything a model's training needs that is not the model itself.

    Attributes:
        n_users, n_items: id space sizes.
        sampler: the negative sampler (an ``nn.Module``; becomes a submodule, so its buffers move).
        loss: the loss function.
        evaluator: the ranking evaluator for validation and test.
        optimizer: optimizer name; ``sparse_adam`` switches embeddings to sparse gradients.
        lr, weight_decay: optimizer settings.
        probe: measures the sampler once per validation epoch (``sampler/...`` metrics), if given.
        train: the training interactions, for models built on them (a graph, user histories).
    """

    n_users: int
    n_items: int
    sampler: nn.Module
    loss: Loss
    evaluator: RankingEvaluator
    optimizer: OptimizerName = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    probe: SamplerProbe | None = None
    train: Interactions | None = None


# Values (floats) of the largest [b, C, d] temporary the row-gathering path builds at once (sparse
# embedding gradients, or a handful of candidates with gradients).
_CHUNK_VALUES = 2**22
# Score all items by GEMM and pick the candidates when the catalogue has at most this many items per
# candidate; otherwise `gathered_dot`. Measured by scripts/candidate_scores.py (docs/benchmarks.md;
# one thread, d 64): at 6.5 items per candidate (2048 x 257 of 1,682) the GEMM wins, 19.1 vs 21.5 ms
# with gradients and 5.6 vs 8.9 without; at 26 (2048 x 65 of 1,682) gathering wins, 4.5 vs 17.4 and
# 2.3 vs 4.6 ms. The GEMM's backward adds a [B, n_items] scatter and two GEMMs, so with gradients
# the threshold is lower.
_GEMM_ITEMS_PER_CANDIDATE = 12
_GEMM_GRAD_ITEMS_PER_CANDIDATE = 8
# The same crossover for sparse embedding gradients, whose rows are gathered (index_add backward),
# measured before `gathered_dot`: equal at 38 items per candidate (512 x 1000 of 38,048: 66 vs 69 ms).
_ROWS_GEMM_GRAD_ITEMS_PER_CANDIDATE = 32
# With gradients and fewer candidates than this, the rows and `batched_dot` are kept. At 2048 x 2 of
# 40,981 the two are a wash (0.83-0.87 vs 0.84-2.64 ms in three runs), and keeping the rows leaves
# one-negative results bit-identical. From 2048 x 5, `gathered_dot` wins (1.44 vs 1.80 ms).
_GATHERED_MIN_CANDIDATES = 4
# On CUDA (an H200, scripts/candidate_scores.py --device cuda, 2026-11-28, docs/benchmarks.md) the order
# turns around: the catalogue GEMM costs 0.35-1.1 ms forward + backward whatever the candidates, and
# gathering the rows beats `gathered_dot` (whose chunk loop is many small launches there) at every shape:
# 2048 x 65 of 40,981 (630 items per candidate) 1.16 ms rows, 1.10 GEMM, 2.87 `gathered_dot`;
# 256 x 301 of 40,981 (136) 0.82 rows, 0.44 GEMM; 512 x 1001 of 38,048 (38) 2.18 rows, 0.37 GEMM,
# 8.59 `gathered_dot`. Forward only the crossover is about the same (0.28 vs 0.43 ms at 630, 0.16 vs
# 0.09 at 136). So on CUDA: the GEMM up to this many items per candidate, the rows beyond.
_CUDA_GEMM_ITEMS_PER_CANDIDATE = 512


def candidate_path(device_type: str, grad: bool, sparse_embeddings: bool, n_items: int, candidates: int) -> str:
    """How ``score`` computes each query's scores of its own ``candidates``: ``gemm`` (every item by one
    GEMM, then a pick), ``gathered`` (``gathered_dot``) or ``rows`` (the rows gathered, ``batched_dot``),
    by the crossovers measured above for ``device_type`` (``cpu``, ``cuda``)."""
    if device_type == "cuda":
        return "gemm" if n_items <= _CUDA_GEMM_ITEMS_PER_CANDIDATE * candidates else "rows"
    if not grad:
        per_candidate = _GEMM_ITEMS_PER_CANDIDATE
    else:
        per_candidate = _ROWS_GEMM_GRAD_ITEMS_PER_CANDIDATE if sparse_embeddings else _GEMM_GRAD_ITEMS_PER_CANDIDATE
    if n_items <= per_candidate * candidates:
        return "gemm"
    if not grad or (not sparse_embeddings and candidates >= _GATHERED_MIN_CANDIDATES):
        return "gathered"
    return "rows"


@dataclass
class _EpochTotals:
    """Per-epoch sums and clocks, kept outside ``nn.Module`` attributes (whose ``__setattr__`` is slow
    per step)."""

    loss: Tensor | float = 0.0
    steps: int = 0
    sampling_seconds: float = 0.0
    started: float = 0.0
    train_seconds: float | None = None
    eval_started: float = 0.0
    eval_seconds: float | None = None
    probe_seconds: float = 0.0


def _on_device(batch: Any, device: torch.device) -> bool:
    """Whether ``batch`` is a tuple of tensors on ``device``, or a list of such tuples."""
    if isinstance(batch, list):
        return all(_on_device(one, device) for one in batch)
    return isinstance(batch, tuple) and all(isinstance(t, Tensor) and t.device == device for t in batch)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux this is VmHWM: ``ru_maxrss`` carries the peak of the process that started this one across
    ``exec`` (a fit started by an 800 MiB benchmark process would report at least 800 MiB).
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


class RecommenderModule(L.LightningModule):
    """Base of every model. Subclasses implement ``score`` and ``score_all``.

    Logged per epoch: ``train/loss``, ``val/{metric}@{k}`` (means over validation users),
    ``sampler/{diagnostic}`` (with a probe; see ``SamplerProbe``) and the
    epoch's cost: ``time/epoch_train_s`` (from the epoch's start to its validation, or its end),
    ``time/eval_s`` (the ranking evaluation), ``time/probe_s`` (the sampler diagnostics),
    ``time/sampling_s`` and ``sys/peak_rss_mb``; after testing, ``test/{metric}@{k}``
    and ``time/test_eval_s``. Device work is synchronised only at those clock points, never per step.
    Per-query metric vectors of the last validation and test pass are kept in ``per_query[stage]``
    for significance tests. ``validation_stage`` names what validation ranks: ``val``, or ``test`` for
    a refit's test curve (``train.refit_test_every``), logged as ``test/{metric}@{k}`` by epoch.
    """

    def __init__(self, parts: TrainingParts) -> None:
        super().__init__()
        self.n_users = parts.n_users
        self.n_items = parts.n_items
        self.sampler = parts.sampler
        self.loss_fn = parts.loss
        self.evaluator = parts.evaluator
        self.optimizer_name = parts.optimizer
        self.lr = parts.lr
        self.weight_decay = parts.weight_decay
        self.probe = parts.probe
        self.validation_stage = "val"
        self.per_query: dict[str, dict[str, Tensor]] = {}
        self.automatic_optimization = False  # see training_step
        self._totals = _EpochTotals()
        self._test_started = 0.0
        self._test_evaluators: list[RankingEvaluator] = []
        self._sparse_embeddings = False  # set by `configure_optimizers` for sparse_adam

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets bookkeeping attributes (`_current_fx_name`, ...) dozens of times per step, and
        # nn.Module.__setattr__ checks each against parameters, buffers and submodules: 0.15 ms per
        # step, a third of an MF step on ml-100k. A plain attribute that exists and stays plain can
        # skip those checks: it is in none of those tables by construction of nn.Module.
        if name in self.__dict__ and not isinstance(value, (Tensor, nn.Module)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- what a model defines -------------------------------------------------------------------
    def score(self, queries: Tensor, items: Tensor) -> Tensor:
        """``queries [B]``, ``items [B, C]`` -> ``scores [B, C]`` (differentiable)."""
        raise NotImplementedError

    def score_all(self, queries: Tensor) -> Tensor:
        """``queries [B]`` -> ``scores [B, n_items]``."""
        raise NotImplementedError

    def score_blocks(self, queries: Tensor, pool: Tensor) -> Tensor:
        """``queries [B]``, ``pool [G, N]`` -> ``[B, N]``: each row scored against its block of the pool
        (``recsys.samplers.pool.block_rows``); by default as ``[B, N]`` items."""
        return self.score(queries, pool[block_rows(len(queries), pool.shape[0], pool.device)])

    def regularization(self, queries: Tensor, positives: Tensor, negatives: Negatives) -> Tensor | float:
        """An extra loss term of the model itself (e.g. L2 on the batch's embeddings); 0 by default."""
        return 0.0

    # Representations that every score of one training step (or one evaluation pass) shares are
    # computed once there: a graph propagation, a user tower whose dropout mask the positive and the
    # negatives must share. The defaults do nothing.
    def begin_step(self, queries: Tensor, positives: Tensor) -> None:
        """Called before the sampler at each training step, with the batch's ``queries [B]`` and
        ``positives [B]``."""

    def end_step(self) -> None:
        """Called once the step's loss is built; drop what ``begin_step`` kept."""

    def begin_evaluation(self) -> None:
        """Called (without gradients) before a validation or test pass scores anything."""

    def end_evaluation(self) -> None:
        """Called after a validation or test pass (and the sampler probe)."""

    def lookup(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        """Rows of ``table`` for ``ids [...]`` -> ``[..., d]`` (see ``recsys.embeddings.lookup``)."""
        return lookup(table, ids)

    # -- training ---------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, ...] | list[tuple[Tensor, ...]], batch_index: int) -> None:
        """One optimizer step per batch: ``batch`` is one batch, or a list of consecutive batches
        (``recsys.data.batching.BatchGroups``: Lightning's per-call bookkeeping is paid once per list)."""
        # Optimised by hand (``automatic_optimization = False``): Lightning's automatic loop wraps
        # every step in a closure and a dozen hooks, measured at 5% of an MF epoch on ml-100k.
        # ``manual_backward`` and the wrapped optimizer keep precision plugins, DDP and the step count.
        optimizer = self.optimizers()
        for one in batch if isinstance(batch, list) else (batch,):
            loss = self.training_loss(one)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()

    def training_loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """The loss of one batch of ``(queries [B], positives [B])``: sample, score, loss, penalty."""
        queries, positives = batch  # [B], [B]
        return self.sampled_loss(queries, positives)

    def sampled_loss(self, queries: Tensor, positives: Tensor, owners: Tensor | None = None) -> Tensor:
        """Draw negatives for ``queries [B]`` with ``positives [B]``, score both and return the loss.

        ``owners [B]`` are the ids the sampler knows the queries by (whose positives it excludes):
        the queries themselves for user-item models; a session model's queries are positions and
        their owners the sessions.
        """
        totals = self._totals
        self.begin_step(queries, positives)
        started = time.perf_counter()
        owners = queries if owners is None else owners
        scorer = BoundScorer(self._score_without_grad, queries, self._score_blocks_without_grad)
        negatives = self.sampler(owners, positives, scorer=scorer)
        totals.sampling_seconds += time.perf_counter() - started
        if negatives.positives is None:
            negatives = replace(negatives, positives=positives)
        if negatives.shared:
            # One set of negatives for all queries: score it once per query with one GEMM-shaped call.
            pos_scores = self.score(queries, positives.unsqueeze(1))[:, 0]  # [B]
            neg_scores = self.score(queries, negatives.items)  # [B, N]
        elif pooled(negatives) and self._candidate_path(
            queries.device, negatives.extras["pool"].shape[0], negatives.items.shape[1]
        ) == "gemm":
            # Windows of one per-batch pool: score the pool with one GEMM, then pick each window (when
            # the pool is small against the windows; a top-1 of a pool of 256 gathers its one row).
            pos_scores = self.score(queries, positives.unsqueeze(1))[:, 0]  # [B]
            pool = negatives.extras["pool"]  # [P]
            pool_scores = self.score(queries, pool.unsqueeze(0).expand(len(queries), -1))  # [B, P]
            neg_scores = pool_scores.gather(1, negatives.extras["pool_index"])  # [B, N]
        else:
            items = torch.cat([positives.unsqueeze(1), negatives.items], dim=1)  # [B, 1 + N]
            scores = self.score(queries, items)  # [B, 1 + N]
            pos_scores, neg_scores = scores[:, 0], scores[:, 1:]
        loss = self.loss_fn(pos_scores, neg_scores, negatives)
        penalty = self.regularization(queries, positives, negatives)
        if isinstance(penalty, Tensor) or penalty:
            loss = loss + penalty
        self.end_step()
        # Summed on the device and read once per epoch: no host sync per step.
        totals.loss = totals.loss + loss.detach()
        totals.steps += 1
        return loss

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Our batches are tuples of tensors; skip Lightning's generic collection walk when they are
        # already where they need to be (every CPU step).
        if _on_device(batch, device):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    @torch.no_grad()
    def _score_without_grad(self, queries: Tensor, items: Tensor) -> Tensor:
        return self.score(queries, items)

    @torch.no_grad()
    def _score_blocks_without_grad(self, queries: Tensor, pool: Tensor) -> Tensor:
        return self.score_blocks(queries, pool)

    def _candidate_path(self, device: torch.device, n_items: int, candidates: int) -> str:
        """``candidate_path`` for this model on ``device``, with or without gradients as now."""
        return candidate_path(device.type, torch.is_grad_enabled(), self._sparse_embeddings, n_items, candidates)

    # The epoch's cost is measured here rather than in a callback: Lightning calls every hook of every
    # callback on every step, and a timing callback measured 0.5-0.9 ms of a 39 ms ml-100k epoch.
    def on_train_epoch_start(self) -> None:
        self._totals = _EpochTotals(started=self._clock())

    def on_validation_start(self) -> None:
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        totals = self._totals
        now = self._clock()
        if totals.train_seconds is None:
            totals.train_seconds = now - totals.started
        totals.eval_started = now

    def on_validation_end(self) -> None:
        if not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            totals = self._totals
            totals.eval_seconds = self._clock() - totals.eval_started - totals.probe_seconds

    def on_train_epoch_end(self) -> None:
        totals = self._totals
        if totals.train_seconds is None:
            totals.train_seconds = self._clock() - totals.started
        if totals.steps:
            self.log("train/loss", totals.loss / totals.steps, prog_bar=True)
        self.log("time/epoch_train_s", totals.train_seconds)
        if totals.eval_seconds is not None:
            self.log("time/eval_s", totals.eval_seconds)
        self.log("time/sampling_s", totals.sampling_seconds)
        self.log("sys/peak_rss_mb", peak_rss_mb())

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # A resumable checkpoint (recsys.fit_state) carries the samplers' generators, so that a resumed
    # fit draws the negatives an uninterrupted one would.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = {name: module.generator_state() for name, module in self.named_modules() if isinstance(module, Sampler)}
        checkpoint[_GENERATORS] = {name: state for name, state in states.items() if state is not None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        modules = dict(self.named_modules())
        for name, state in checkpoint.get(_GENERATORS, {}).items():
            if isinstance(modules.get(name), Sampler):
                modules[name].restore_generator(state)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "sparse_adam":
            # Sparse gradients make an embedding step cost O(batch rows), not O(table).
            for module in self.modules():
                if isinstance(module, nn.Embedding):
                    module.sparse = True
            self._sparse_embeddings = True
        return build_optimizer(self.optimizer_name, self.parameters(), self.lr, self.weight_decay)

    # -- evaluation -------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        with torch.no_grad():
            self.begin_evaluation()
        self.evaluator.begin(self)

    def validation_step(self, batch: RankingBatch, batch_index: int) -> None:
        self.evaluator.step(self, batch)

    def on_validation_epoch_end(self) -> None:
        self._log_ranking(self.validation_stage)
        if self.probe is not None and self.trainer.state.fn == "fit":
            started = self._clock()
            figures = self.probe.measure(
                self.sampler, self._score_without_grad, self.device, self._score_blocks_without_grad
            )
            self.log_dict({f"sampler/{name}": value for name, value in figures.items()})
            self._totals.probe_seconds = self._clock() - started
            self.log("time/probe_s", self._totals.probe_seconds)
        self.end_evaluation()

    def on_test_epoch_start(self) -> None:
        self._test_started = self._clock()
        with torch.no_grad():
            self.begin_evaluation()
        # One evaluator per test dataloader (the exposed protocol's second pass ranks rare items);
        # the datamodule names their stages (default: one pass, "test").
        stages = getattr(self.trainer.datamodule, "test_stages", ("test",))
        self._test_evaluators = [self.evaluator] + [copy.copy(self.evaluator) for _ in stages[1:]]
        for evaluator in self._test_evaluators:
            evaluator.begin(self)

    def test_step(self, batch: RankingBatch, batch_index: int, dataloader_idx: int = 0) -> None:
        self._test_evaluators[dataloader_idx].step(self, batch)

    def on_test_epoch_end(self) -> None:
        stages = getattr(self.trainer.datamodule, "test_stages", ("test",))
        for stage, evaluator in zip(stages, self._test_evaluators, strict=True):
            self._log_ranking(stage, evaluator)
        self.end_evaluation()
        self.log("time/test_eval_s", self._clock() - self._test_started)
        self.log("sys/peak_rss_mb", peak_rss_mb())

    def _log_ranking(self, stage: str, evaluator: RankingEvaluator | None = None) -> None:
        results = (evaluator or self.evaluator).end()
        self.per_query[stage] = {name: values.cpu() for name, values in results.items()}
        means: dict[str, Any] = {
            f"{stage}/{name}": values.mean() for name, values in results.items() if name != "queries"
        }
        self.log_dict(means, prog_bar=False)


class DotProductModule(RecommenderModule):
    """A model whose score is ``query_embeddings(q) . item_embeddings()[i]``.

    Subclasses define ``query_embeddings`` and ``item_embeddings``; scoring, full ranking (one GEMM
    in the evaluator) and sampler scoring follow. Keep embeddings in ``nn.Embedding`` modules and read
    them with ``lookup``, so that ``sparse_adam`` can make their gradients sparse.
    """

    def query_embeddings(self, queries: Tensor) -> Tensor:
        """``queries [B]`` -> ``[B, d]``."""
        raise NotImplementedError

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        """``items [...]`` -> ``[..., d]``; all items ``[n_items, d]`` when ``items`` is None."""
        raise NotImplementedError

    def score(self, queries: Tensor, items: Tensor) -> Tensor:
        query = self.query_embeddings(queries)  # [B, d]
        candidates = items.shape[1]
        if items.shape[0] > 1 and items.stride(0) == 0:
            # The same candidates for every query (shared negatives): one GEMM; when they outnumber
            # the catalogue (TRON: 16,511 of 2,933 items), a GEMM over the catalogue and a column pick.
            if items.shape[1] > self.n_items:
                return (query @ self.item_embeddings().T).index_select(1, items[0])  # [B, C]
            return query @ self.item_embeddings(items[0]).T  # [B, C]
        path = self._candidate_path(query.device, self.n_items, candidates)
        if path == "gemm":
            # A small catalogue against many candidates: one GEMM and a pick (crossovers above).
            return (query @ self.item_embeddings().T).gather(1, items)
        if path == "gathered":
            # Never holds the [B, C, d] rows: 26.1 vs 119.9 ms fwd + bwd for 512 x 1001 of 38,048 (CPU).
            return gathered_dot(query, self.item_embeddings(), items)
        # Sparse gradients need the rows gathered through `lookup` (as do a few candidates, faster so).
        # Chunks keep each [b, C, d] temporary under ~16 MB: larger ones are fresh mmap'd memory that
        # page-faults on every step (a 33 MB gather measured 8.5 ms, two 16 MB ones 0.3 ms).
        rows = max(1, _CHUNK_VALUES // (candidates * query.shape[1]))
        scores = [
            batched_dot(query[start : start + rows], self.item_embeddings(items[start : start + rows]))
            for start in range(0, items.shape[0], rows)
        ]
        return scores[0] if len(scores) == 1 else torch.cat(scores)

    def score_all(self, queries: Tensor) -> Tensor:
        return self.query_embeddings(queries) @ self.item_embeddings().T  # [B, n_items]

    def score_blocks(self, queries: Tensor, pool: Tensor) -> Tensor:
        # Each run of rows times its own block: one batched GEMM over [G, R, d] x [G, d, N], rows
        # padded to G runs of R = ceil(B / G) (the layout of ``block_rows``).
        query = self.query_embeddings(queries)  # [B, d]
        n_blocks, width = pool.shape
        batch, dim = query.shape
        per_block = -(-batch // n_blocks)
        padded = n_blocks * per_block
        if padded != batch:
            query = torch.cat([query, query.new_zeros(padded - batch, dim)])
        scores = torch.bmm(query.view(n_blocks, per_block, dim), self.item_embeddings(pool).transpose(1, 2))
        return scores.view(padded, width)[:batch]  # [B, N]
