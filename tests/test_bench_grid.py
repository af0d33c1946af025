"""`recsys bench -c GRID.yaml`: the statistics against independent computations, the grid file's checks,
and a tiny grid end to end (table, tests, plots, a re-run that skips finished cells and retries others)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from recsys.bench.grid import load_grid
from recsys.evaluation.significance import confidence_interval, holm, paired_tests
from recsys.cli import main
from recsys.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"

# --- statistics ----------------------------------------------------------------------------------


def test_holm_matches_a_hand_computed_example() -> None:
    # Sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06, monotone).
    adjusted, rejected = holm([0.03, 0.01, 0.04, 0.02], alpha=0.05)
    assert adjusted == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert rejected == [False, True, False, False]
    # Step-down stops at the first failure even when a later raw p-value is below its own bound.
    adjusted, rejected = holm([0.001, 0.03, 0.04], alpha=0.05)  # 0.003, 0.06, 0.06
    assert adjusted == pytest.approx([0.003, 0.06, 0.06]) and rejected == [True, False, False]
    # Capped at 1; NaN (a test that could not run) is left out of the family and stays NaN.
    # (m = 3: 0.01 x3 = 0.03, 0.7 x2 = 1.4 -> 1, 0.9 x1 = 0.9 -> 1, monotone.)
    adjusted, rejected = holm([0.7, math.nan, 0.01, 0.9])
    assert math.isnan(adjusted[1]) and [adjusted[i] for i in (0, 2, 3)] == pytest.approx([1.0, 0.03, 1.0])
    assert rejected == [False, False, True, False]


def test_the_confidence_interval_is_scipys_t_interval() -> None:
    values = [0.31, 0.35, 0.29, 0.33]
    interval = confidence_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert interval.mean == pytest.approx(0.32) and interval.n == 4
    single = confidence_interval([0.5])
    assert single.mean == 0.5 and math.isnan(single.low) and math.isnan(single.half_width)


def test_paired_tests_on_a_known_case() -> None:
    # Differences 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426 with 4 dof.
    baseline = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    treatment = baseline + np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    test = paired_tests(treatment, baseline)
    assert test.n == 5 and test.mean_difference == pytest.approx(3.0)
    assert test.t_p == pytest.approx(2 * stats.t.sf(3 / math.sqrt(2.5 / 5), 4))
    # Wilcoxon, exact: all five differences positive, so W- = 0, the most extreme of 2^5 sign patterns.
    assert test.wilcoxon_p == pytest.approx(2 / 2**5)
    same = paired_tests(baseline, baseline)
    assert (same.t_p, same.wilcoxon_p) == (1.0, 1.0)
    assert math.isnan(paired_tests(np.array([1.0]), np.array([0.0])).t_p)


# --- the grid file -------------------------------------------------------------------------------

TINY = f"""
base: {QUICKSTART}
overrides: [train.max_epochs=2, train.patience=5, model.dim=8, tracking.log_checkpoint=false]
axes:
  sampler:
    - {{label: uniform}}
    - {{label: popularity, overrides: [sampler.name=popularity]}}
seeds: [1, 2]
baseline: uniform
report: {{ks: [20], metrics: [recall, ndcg]}}
"""


def _grid(tmp_path: Path, text: str = TINY, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_grid_resolves_every_cell_and_each_groups_baseline(tmp_path: Path) -> None:
    text = TINY.replace("baseline: uniform", "baseline: {sampler: uniform}").replace(
        "seeds:", "  model:\n    - {label: mf8}\n    - {label: mf16, overrides: [model.dim=16]}\nseeds:")
    plan = load_grid(_grid(tmp_path, text))
    assert plan.axes == ("sampler", "model") and len(plan.cells) == 8
    assert plan.metrics == ("recall@20", "ndcg@20") and plan.experiment == "bench-tiny"
    # The baseline's label on the sampler axis, the group's own on the model axis.
    assert plan.baselines[("popularity", "mf16")] == ("uniform", "mf16")
    cell = next(cell for cell in plan.cells if cell.group == ("popularity", "mf16") and cell.seed == 2)
    assert (cell.config.sampler.name, cell.config.model.dim, cell.config.seed) == ("popularity", 16, 2)
    assert cell.config.train.max_epochs == 2 and cell.config.tracking.experiment == "bench-tiny"
    assert len({cell.key for cell in plan.cells}) == 8  # every cell its own identity
    # A value may name its own control on its axis: an ablation against its matched twin.
    own = text.replace("{label: mf16, overrides: [model.dim=16]}", "{label: mf16, overrides: [model.dim=16], baseline: mf8}")
    plan = load_grid(_grid(tmp_path, own))
    assert plan.baselines[("popularity", "mf16")] == ("uniform", "mf8")
    assert plan.baselines[("popularity", "mf8")] == ("uniform", "mf8")
    # A bare label names the baseline only when there is one axis.
    with pytest.raises(ConfigError, match="baseline: with several axes, give a mapping axis: label"):
        load_grid(_grid(tmp_path, text.replace("baseline: {sampler: uniform}", "baseline: uniform")))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("seeds: [1, 2]", "seeds: [1, 1]"), "seeds: a seed appears more than once"),
        (("baseline: uniform", "baseline: unifrom"), "baseline.sampler: no value labelled 'unifrom'"),
        (("baseline: uniform", "baseline: {model: uniform}"), "baseline.model: no such axis"),
        (("{label: popularity,", "{label: popularity, baseline: unifrom,"),
         "axes.sampler: popularity: baseline 'unifrom' is not a value of this axis"),
        (("report: {", "reprot: {"), "reprot: unknown key"),
        (("{label: uniform}", "{label: uniform, overides: []}"), "axes.sampler.0.overides: unknown key"),
        (("{label: popularity,", "{label: uniform,"), "axes.sampler: label 'uniform' appears more than once"),
        (("metrics: [recall, ndcg]", "metrics: [recall, ndgc]"), "report: ndgc@20 is not computed by cell"),
        (("sampler.name=popularity]", "sampler.name=popularity, sampler.alpah=1]"),
         "cell sampler=popularity: "),
        (("seeds: [1, 2]", "seeds: [-1]"), "seeds.0: Input should be greater than or equal to 0"),
        ((f"base: {QUICKSTART}", "base: nowhere.yaml"), "nowhere.yaml: no such config file"),
    ],
)
def test_grid_mistakes_exit_2_with_one_line_naming_the_file_and_key(tmp_path: Path, capsys, change, expected) -> None:
    path = _grid(tmp_path, TINY.replace(*change))
    assert main(["bench", "-c", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith(f"recsys: error: {path}: ") and expected in error
    assert not (tmp_path / "mlflow.db").exists()  # nothing ran, nothing was tracked


@pytest.mark.parametrize("grid", sorted((REPO / "configs" / "bench").glob("*.yaml")), ids=lambda path: path.name)
def test_the_shipped_grids_resolve(grid: Path) -> None:
    plan = load_grid(grid)
    assert plan.cells and all(baseline in plan.groups for baseline in plan.baselines.values())


def test_samplers_ml100k_is_mf_with_five_samplers_and_three_seeds() -> None:
    plan = load_grid(REPO / "configs" / "bench" / "samplers_ml100k.yaml")
    assert [group for (group,) in plan.groups] == ["uniform", "popularity", "in_batch", "topk", "ambiguous"]
    assert len(plan.cells) == 15 and {cell.config.model.name for cell in plan.cells} == {"mf"}
    assert {cell.config.sampler.name for cell in plan.cells} == {"uniform", "popularity", "in_batch", "topk", "ambiguous"}
    assert {cell.config.loss.name for cell in plan.cells} == {"bpr"} and set(plan.baselines.values()) == {("uniform",)}


def test_bench_without_a_grid_or_subcommand_exits_2(capsys) -> None:
    assert main(["bench"]) == 2
    assert capsys.readouterr().err.strip() == "recsys: error: recsys bench: give -c GRID.yaml, or a subcommand (speed, samplers)"


def test_a_grid_file_that_is_not_a_mapping_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["bench", "-c", str(_grid(tmp_path, "- a\n- b\n"))]) == 2
    assert "a grid file must be a mapping" in capsys.readouterr().err


# --- end to end ----------------------------------------------------------------------------------


def _bench(tmp_path: Path, grid: Path) -> int:
    return main(["bench", "-c", str(grid), "--out", str(tmp_path / "out"), "--data-root", str(REPO / "data"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--cache-dir", str(tmp_path / "cache")])


def _runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("bench-tiny").experiment_id])


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_a_tiny_grid_end_to_end_and_a_rerun_that_skips_finished_cells(tmp_path: Path, capsys) -> None:
    grid = _grid(tmp_path)
    assert _bench(tmp_path, grid) == 0
    captured = capsys.readouterr()
    assert captured.err.count("... finished in") == 4 and "[4/4] sampler=popularity, seed 2" in captured.err
    out = tmp_path / "out"
    for name in ("results.md", "results.csv", "significance.csv", "cells.csv", "metric_bars.png",
                 "sampler_diagnostics.png", "accuracy_vs_compute.png"):
        assert (out / name).is_file(), name

    # One parent run tagged with the grid's hash, four FINISHED cells nested under it.
    runs = _runs(tmp_path)
    (parent,) = [run for run in runs if "bench.grid_sha256" in run.data.tags]
    cells = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(runs) == 5 and len(cells) == 4
    assert {run.info.status for run in cells} == {"FINISHED"}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    logged = {entry.path for entry in client.list_artifacts(parent.info.run_id)}
    assert {"results.md", "results.csv", "significance.csv", "grid.yaml", "plots"} <= logged

    # The table: the mean and t interval of each group's seeds, read back from its runs.
    rows = {row["sampler"]: row for row in _csv(out / "results.csv")}
    uniform = [run.data.metrics["test/recall_at_20"] for run in cells if run.data.tags["bench.group"] == "uniform"]
    low, high = stats.t.interval(0.95, 1, loc=np.mean(uniform), scale=stats.sem(uniform))
    assert float(rows["uniform"]["recall@20_mean"]) == pytest.approx(np.mean(uniform))
    assert (float(rows["uniform"]["recall@20_low"]), float(rows["uniform"]["recall@20_high"])) == pytest.approx((low, high))
    assert rows["uniform"]["seeds"] == "2" and float(rows["popularity"]["s_per_epoch"]) > 0
    assert "| uniform (baseline) | 2 |" in (out / "results.md").read_text()

    # The tests: popularity against uniform on each metric, over the sample's test users.
    tests = _csv(out / "significance.csv")
    assert [(row["sampler"], row["baseline"], row["metric"]) for row in tests] == [
        ("popularity", "uniform", "recall@20"), ("popularity", "uniform", "ndcg@20")]
    for row in tests:
        assert int(row["users"]) > 100 and 0 <= float(row["t_p"]) <= 1 and 0 <= float(row["wilcoxon_p"]) <= 1
        # One comparison per family: Holm leaves the p-values as they are.
        assert float(row["t_p_holm"]) == pytest.approx(float(row["t_p"]))
        assert row["t_significant"] == str(float(row["t_p"]) <= 0.05)

    # Again: every cell is skipped, no run is added.
    assert _bench(tmp_path, grid) == 0
    assert capsys.readouterr().err.count("skipped (finished run") == 4
    assert len(_runs(tmp_path)) == 5

    # A failed cell and a deleted cell are run again, and only they.
    failed, deleted = cells[0], cells[1]
    client.set_terminated(failed.info.run_id, "FAILED")
    client.delete_run(deleted.info.run_id)
    assert _bench(tmp_path, grid) == 0
    err = capsys.readouterr().err
    assert err.count("skipped (finished run") == 2 and err.count("... finished in") == 2
    again = [run for run in _runs(tmp_path) if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(again) == 5  # four before (one deleted, so not listed), two new
    assert {run.data.tags["bench.cell"] for run in again if run.info.status == "FINISHED"} == {
        run.data.tags["bench.cell"] for run in cells}
    assert len(_csv(out / "cells.csv")) == 4


def test_a_cell_that_raises_is_reported_and_the_grid_goes_on(tmp_path: Path, capsys, monkeypatch) -> None:
    import recsys.experiment

    real_fit = recsys.experiment.fit

    def flaky_fit(config, *args, **kwargs):
        if config.sampler.name == "popularity" and config.seed == 1:
            raise RuntimeError("out of luck")
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(recsys.experiment, "fit", flaky_fit)
    grid = _grid(tmp_path)
    assert _bench(tmp_path, grid) == 1
    captured = capsys.readouterr()
    assert "sampler=popularity, seed 1 ... FAILED after" in captured.err and "out of luck" in captured.err
    assert "1 cells failed (sampler=popularity, seed 1); run the same command again" in captured.err
    assert "**1 of 4 cells have no finished run**" in (tmp_path / "out" / "results.md").read_text()
    (parent,) = [run for run in _runs(tmp_path) if "bench.grid_sha256" in run.data.tags]
    assert parent.info.status == "FAILED"

    monkeypatch.setattr(recsys.experiment, "fit", real_fit)
    assert _bench(tmp_path, grid) == 0
    assert capsys.readouterr().err.count("... finished in") == 1
    (parent,) = [run for run in _runs(tmp_path) if "bench.grid_sha256" in run.data.tags]
    assert parent.info.status == "FINISHED"


def test_a_changed_grid_file_is_a_new_parent_run(tmp_path: Path) -> None:
    grid = _grid(tmp_path, TINY.replace("seeds: [1, 2]", "seeds: [1]"))
    assert _bench(tmp_path, grid) == 0
    grid.write_text(grid.read_text() + "# a comment changes the file's hash\n")
    assert _bench(tmp_path, grid) == 0
    parents = [run for run in _runs(tmp_path) if "bench.grid_sha256" in run.data.tags]
    assert len(parents) == 2 and len(_runs(tmp_path)) == 6
