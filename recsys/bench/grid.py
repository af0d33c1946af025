"""`recsys bench -c GRID.yaml`: a grid of experiments x seeds, each cell one tracked `recsys fit`, read
back into one table with confidence intervals, paired tests against a baseline, and plots.

A grid file (``configs/bench/samplers_ml100k.yaml`` is one)::

    base: ../ml-100k/mf_bpr.yaml                 # the experiment config, relative to this file
    overrides: [tracking.log_checkpoint=false]   # dotted overrides for every cell (optional)
    axes:                                        # named axes; the cells are their product x seeds
      sampler:
        - {label: uniform}
        - {label: popularity, overrides: [sampler.name=popularity, sampler.alpha=0.75]}
    seeds: [2020, 1, 2]
    baseline: {sampler: uniform}                 # what every other group is tested against
    report: {ks: [20], metrics: [recall, ndcg]}  # optional (default: the base config's eval)
    experiment: bench-samplers                   # optional (default: bench-<grid file stem>)

- ``axes``: each axis a list of values ``{label, overrides, base}``. A cell's config is the base config
  with the grid's ``overrides``, then its values' ``overrides`` in axis order, then its seed (in most
  configs the seed also draws the split). A value may name its own ``base`` instead of the grid's (a
  dataset axis, each dataset with its protocol); exactly one base must apply to every cell.
- ``baseline``: labels on some of the axes (a bare label when there is one axis). A *group* (one label
  per axis, all seeds) is tested against the group with the baseline's labels on those axes and its own
  labels on the others: leave a dataset axis out of ``baseline`` and samplers are compared within each
  dataset (paired tests need the same users).
  A value may name its own control on its axis instead (``baseline: LABEL`` in the value: an ablation
  tested against its matched control rather than the common baseline).
- ``report``: the ``ks`` and ``metrics`` of the tables and tests; every cell must compute them.

Every cell's config is resolved before anything runs, so a mistake in the grid or in any cell stops
the command (exit 2) with one line naming the grid file and the cell.

Tracking: one parent run per grid file, found again by the file's sha256 (tag ``bench.grid_sha256``);
every cell a run nested under it, tagged ``bench.cell`` with the hash of its resolved config (its
identity). Running the grid again skips the cells that have a FINISHED run under the parent and runs the
others (never run, failed, killed or deleted); the tables and plots are rebuilt from every finished cell
(``recsys.bench.results``, ``recsys.bench.plots``) and logged to the parent run. Cells run one after
another in this process: a cell run after two others gave the same test metrics, to the last digit, as
in a fresh process, and saves the ~5 s start-up of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from recsys.bench.plots import draw_plots
from recsys.bench.results import CellRecord, Group, compare, markdown, summarise, write_tables
from recsys.config import ExperimentConfig, load_config, parse_yaml
from recsys.errors import ConfigError, UserError
from recsys.tracking.run import mlflow_key

__all__ = ["Cell", "GridOutcome", "GridSpec", "Plan", "load_grid", "run_grid"]

_GRID_TAG = "bench.grid_sha256"
_CELL_TAG = "bench.cell"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AxisValue(_Strict):
    """One value of an axis: its label in the tables, its overrides, and optionally its own base config."""

    label: StrictStr = Field(min_length=1)
    overrides: list[StrictStr] = []
    base: StrictStr | None = None
    baseline: StrictStr | None = None  # this value's own control on its axis (default: the grid's)


class ReportSpec(_Strict):
    """The metrics of the tables and tests: ``metric@k`` for every metric and k."""

    ks: list[Annotated[StrictInt, Field(ge=1)]] | None = Field(None, min_length=1)
    metrics: list[StrictStr] | None = Field(None, min_length=1)


class GridSpec(_Strict):
    """A grid file as written (see the module docstring)."""

    base: StrictStr | None = None
    overrides: list[StrictStr] = []
    axes: dict[StrictStr, list[AxisValue]]
    seeds: list[Annotated[StrictInt, Field(ge=0)]]
    baseline: dict[StrictStr, StrictStr] | StrictStr
    report: ReportSpec = ReportSpec()
    experiment: StrictStr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> GridSpec:
        if not self.axes:
            raise ValueError("axes: give at least one axis")
        for name, values in self.axes.items():
            if not values:
                raise ValueError(f"axes.{name}: give at least one value")
            labels = [value.label for value in values]
            repeated = [label for label in labels if labels.count(label) > 1]
            if repeated:
                raise ValueError(f"axes.{name}: label {repeated[0]!r} appears more than once")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: a seed appears more than once in {self.seeds}")
        for axis, label in self.baseline_labels().items():
            if axis not in self.axes:
                raise ValueError(f"baseline.{axis}: no such axis (axes: {', '.join(self.axes)})")
            known = [value.label for value in self.axes[axis]]
            if label not in known:
                raise ValueError(f"baseline.{axis}: no value labelled {label!r} (labels: {', '.join(known)})")
        for axis, values in self.axes.items():
            known = [value.label for value in values]
            for value in values:
                if value.baseline is not None and value.baseline not in known:
                    raise ValueError(f"axes.{axis}: {value.label}: baseline {value.baseline!r} is not a value "
                                     f"of this axis (labels: {', '.join(known)})")
        return self

    def control(self, axis: str, label: str) -> str:
        """The label that a group with ``label`` on ``axis`` is compared with on that axis."""
        own = next(value.baseline for value in self.axes[axis] if value.label == label)
        return own if own is not None else self.baseline_labels().get(axis, label)

    def baseline_labels(self) -> dict[str, str]:
        """The baseline as ``axis -> label``."""
        if isinstance(self.baseline, dict):
            if not self.baseline:
                raise ValueError("baseline: name the baseline's label on at least one axis")
            return dict(self.baseline)
        if len(self.axes) != 1:
            raise ValueError("baseline: with several axes, give a mapping axis: label")
        return {next(iter(self.axes)): self.baseline}


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a group (one label per axis) at one seed, with its resolved config.

    ``key`` is a hash of the resolved config: the cell's identity in the tracking store.
    """

    group: Group
    seed: int
    config: ExperimentConfig
    key: str


@dataclass(frozen=True)
class Plan:
    """A grid file resolved into cells: every config checked, every group's baseline known."""

    path: Path
    sha256: str
    text: str
    axes: tuple[str, ...]
    groups: tuple[Group, ...]
    cells: tuple[Cell, ...]
    baselines: dict[Group, Group]
    metrics: tuple[str, ...]
    experiment: str


def load_grid(path: Path) -> Plan:
    """Read and check a grid file and resolve the config of every cell.

    Raises:
        ConfigError: unreadable file, unknown key, bad value, or a cell whose config is invalid (naming
            the grid file and the key or cell).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such grid file")
    text = path.read_text()
    raw = parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a grid file must be a mapping (base, axes, seeds, baseline, ...)")
    spec = _validate(raw, path)
    axes = tuple(spec.axes)
    experiment = spec.experiment or f"bench-{path.stem}"
    groups, cells = [], []
    for values in itertools.product(*(spec.axes[axis] for axis in axes)):
        group = tuple(value.label for value in values)
        groups.append(group)
        base = _base(spec, values, path)
        overrides = [*spec.overrides, *(override for value in values for override in value.overrides)]
        try:
            resolved = load_config(base, overrides)
        except ConfigError as error:
            raise ConfigError(f"{path}: cell {_describe(axes, group)}: {error}") from None
        for seed in spec.seeds:
            tracking = resolved.tracking.model_copy(
                update={"experiment": experiment, "run_name": f"{path.stem}-{'-'.join(group)}-seed{seed}"}
            )
            config = dataclasses.replace(resolved, seed=seed, tracking=tracking)
            key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
            cells.append(Cell(group, seed, config, key))
    metrics = _metrics(spec, cells, axes, path)
    baselines = {group: tuple(spec.control(axis, label) for axis, label in zip(axes, group, strict=True))
                 for group in groups}
    return Plan(path, hashlib.sha256(text.encode()).hexdigest(), text, axes, tuple(groups), tuple(cells),
                baselines, metrics, experiment)


def _validate(raw: dict, path: Path) -> GridSpec:
    try:
        return GridSpec.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            reason = "unknown key"
        elif first["type"] == "missing":
            reason = "missing required key"
        elif first["type"] == "value_error":  # our own checks name their key
            raise ConfigError(f"{path}: {first['msg'].removeprefix('Value error, ')}") from None
        else:
            reason = f"{first['msg']}, got {first.get('input')!r}"
        raise ConfigError(f"{path}: {location}: {reason}") from None


def _base(spec: GridSpec, values: tuple[AxisValue, ...], path: Path) -> Path:
    named = [value for value in values if value.base is not None]
    if len(named) > 1:
        raise ConfigError(f"{path}: axes: values {named[0].label!r} and {named[1].label!r} both name a base config")
    base = named[0].base if named else spec.base
    if base is None:
        raise ConfigError(f"{path}: base: missing (give base, or a base on every value of one axis)")
    return path.parent / base


def _metrics(spec: GridSpec, cells: list[Cell], axes: tuple[str, ...], path: Path) -> tuple[str, ...]:
    evaluation = cells[0].config.eval
    ks = spec.report.ks or list(evaluation.ks)
    names = tuple(f"{metric}@{k}" for metric in (spec.report.metrics or evaluation.metrics) for k in ks)
    for cell in cells:
        computed = cell.config.eval.metric_names()
        missing = [name for name in names if name not in computed]
        if missing:
            raise ConfigError(f"{path}: report: {missing[0]} is not computed by cell {_describe(axes, cell.group)} "
                              f"(its eval computes {', '.join(computed)})")
    return names


def _describe(axes: tuple[str, ...], group: Group) -> str:
    return " ".join(f"{axis}={label}" for axis, label in zip(axes, group, strict=True))


@dataclass(frozen=True)
class GridOutcome:
    """What a run of the grid did and wrote."""

    parent_run_id: str
    out: Path
    ran: int
    skipped: int
    failed: list[str]
    markdown: str
    files: list[Path]


def run_grid(path: Path, out: Path, data_root: Path, tracking_uri: str, cache_dir: Path | None = None) -> GridOutcome:
    """Run the grid's unfinished cells, then write and log its tables and plots.

    A cell that raises (not a user's mistake) is reported and the grid goes on; the parent run then
    ends FAILED, and running the grid again retries that cell. A user's mistake (missing data) stops it.
    """
    plan = load_grid(path)
    client, experiment_id, parent = _parent_run(plan, tracking_uri)
    status = "FAILED"
    try:
        finished = _finished_runs(client, experiment_id, parent)
        ran, failed = 0, []
        for index, cell in enumerate(plan.cells, start=1):
            prefix = f"bench: [{index}/{len(plan.cells)}] {_describe(plan.axes, cell.group)}, seed {cell.seed}"
            if cell.key in finished:
                print(f"{prefix}: skipped (finished run {finished[cell.key].info.run_id})", file=sys.stderr)
            elif _run_cell(plan, cell, parent, prefix, data_root, tracking_uri, cache_dir):
                ran += 1
            else:
                failed.append(f"{_describe(plan.axes, cell.group)}, seed {cell.seed}")
        text, files = _report(plan, client, _finished_runs(client, experiment_id, parent), parent, tracking_uri, out,
                              failed)
        if failed:
            client.set_tag(parent, "bench.failed_cells", str(len(failed)))
        status = "FAILED" if failed else "FINISHED"
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C (Lightning turns it into SystemExit(1))
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent, status)
    return GridOutcome(parent, out, ran, len(plan.cells) - ran - len(failed), failed, text, files)


def _run_cell(plan: Plan, cell: Cell, parent: str, prefix: str, data_root: Path, tracking_uri: str,
              cache_dir: Path | None) -> bool:
    """Fit one cell as a run nested under ``parent``, with one progress line; False if it raised."""
    from recsys.experiment import fit

    print(f"{prefix} ...", end="", file=sys.stderr, flush=True)
    started = time.perf_counter()
    tags = {_CELL_TAG: cell.key, "bench.group": " / ".join(cell.group),
            **{f"bench.axis.{axis}": label for axis, label in zip(plan.axes, cell.group, strict=True)}}
    try:
        result = fit(cell.config, data_root, tracking_uri, cache_dir, progress=False, parent_run_id=parent, tags=tags)
    except UserError:  # missing data: every other cell would fail the same way
        print(" stopped", file=sys.stderr)
        raise
    except Exception as error:  # a bug or a diverged run: the grid goes on, a re-run retries the cell
        print(f" FAILED after {time.perf_counter() - started:.1f} s: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
        return False
    first = plan.metrics[0]
    print(f" finished in {time.perf_counter() - started:.1f} s ({result.epochs} epochs, test {first} "
          f"{result.test.get(first, float('nan')):.4f})", file=sys.stderr, flush=True)
    return True


def _parent_run(plan: Plan, tracking_uri: str) -> tuple[Any, str, str]:
    """The grid's MLflow run: the oldest with this grid file's sha256 in the experiment, else a new one.
    A found run is set RUNNING again until this invocation ends."""
    from recsys.tracking.run import TrackedRun

    for name in ("mlflow.store.db.utils", "alembic"):  # a new store's table creation, as `recsys fit` does
        logging.getLogger(name).setLevel(logging.WARNING)
    run = TrackedRun(tracking_uri, plan.experiment, f"bench-{plan.path.stem}",
                     {"command": "bench", "bench.grid": str(plan.path), _GRID_TAG: plan.sha256})
    found = run.client.search_runs([run.experiment_id], filter_string=f"tags.`{_GRID_TAG}` = '{plan.sha256}'",
                                   order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
        run.client.update_run(run_id, status="RUNNING")
        return run.client, run.experiment_id, run_id
    run.__enter__()
    run.log_params({"grid": str(plan.path), "axes": list(plan.axes), "seeds": sorted({c.seed for c in plan.cells}),
                    "cells": len(plan.cells), "baseline": " / ".join(plan.baselines[plan.groups[0]])})
    run.log_text(plan.text, "grid.yaml")
    return run.client, run.experiment_id, run.run_id


def _finished_runs(client: Any, experiment_id: str, parent: str) -> dict[str, Any]:
    """The parent's FINISHED child runs by cell key (the latest where a key has several)."""
    runs: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1000, page_token=token,
        )
        for run in page:
            key = run.data.tags.get(_CELL_TAG)
            if key is not None:
                runs.setdefault(key, run)
        token = page.token
        if not token:
            return runs


def _report(plan: Plan, client, finished: dict[str, object], parent: str, tracking_uri: str, out: Path,
            failed: list[str]) -> tuple[str, list[Path]]:
    """Write results.md, the CSVs and the plots to ``out`` and log them to the parent run."""
    records = [_record(client, cell, finished[cell.key], plan.metrics) for cell in plan.cells if cell.key in finished]
    rows = summarise(records, plan.groups, plan.metrics)
    comparisons = compare(records, plan.baselines, plan.metrics)
    missing = len(plan.cells) - len(records)
    lines = [
        f"# Benchmark grid {plan.path.stem}",
        f"Grid `{plan.path}` (sha256 `{plan.sha256[:12]}`): {len(plan.groups)} groups x "
        f"{len(plan.cells) // len(plan.groups)} seeds; MLflow run `{parent}` (experiment `{plan.experiment}`) "
        f"in `{tracking_uri}`.",
    ]
    if missing:
        lines.append(f"**{missing} of {len(plan.cells)} cells have no finished run** "
                     f"({'failed: ' + '; '.join(failed) if failed else 'not run'}); the table holds the others.")
    text = "\n\n".join([*lines, markdown(plan.axes, rows, comparisons, plan.metrics, plan.baselines)])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    files = [out / "results.md", *write_tables(out, plan.axes, rows, comparisons, records, plan.metrics),
             *draw_plots(out, rows, records, plan.metrics)]
    for file in files:
        client.log_artifact(parent, str(file), "plots" if file.suffix == ".png" else None)
    return text, files


@contextmanager
def _no_download_bars() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded artifact; one line per cell is enough."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _record(client, cell: Cell, run, metrics: tuple[str, ...]) -> CellRecord:
    """A cell's finished run read back: test means, cost, sampler diagnostics, per-user test metrics."""
    run_id = run.info.run_id

    def history(key: str) -> dict[int, float]:
        return {entry.step: entry.value for entry in sorted(client.get_metric_history(run_id, key),
                                                            key=lambda entry: (entry.step, entry.timestamp))}

    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as folder, _no_download_bars():
        per_user = pl.read_parquet(client.download_artifacts(run_id, "per_user/test.parquet", folder))
    query = "user" if "user" in per_user.columns else per_user.columns[0]  # sessions: "prediction"
    per_user = per_user.select(pl.col(query).alias("query"), *metrics)
    return CellRecord(
        group=cell.group,
        seed=cell.seed,
        run_id=run_id,
        metrics={name: run.data.metrics[f"test/{mlflow_key(name)}"] for name in metrics},
        # A refit without a selection run (train.refit_epochs) has only its refit's epochs.
        epochs=int(run.data.tags.get("epochs", run.data.tags.get("refit_epochs", 0))),
        wall_s=(run.info.end_time - run.info.start_time) / 1000,
        epoch_train_s=list((history("time/epoch_train_s") or history("refit/time/epoch_train_s")).values()),
        diagnostics={key.removeprefix("sampler/"): history(key) for key in run.data.metrics
                     if key.startswith("sampler/")},
        per_user=per_user,
    )

