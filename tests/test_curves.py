"""`recsys curves`: tracked runs' per-epoch histories as a summary, a CSV and a PNG."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.tracking.curves import Curve

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "quickstart.yaml")


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _fit(tmp_path: Path, *overrides: str) -> str:
    assert main(["fit", "-c", CONFIG, "--data-root", str(REPO / "data"), "--tracking-uri", _uri(tmp_path),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress", *overrides]) == 0
    client = MlflowClient(_uri(tmp_path))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time DESC"])
    return runs[0].info.run_id


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_curves_of_two_fits_are_their_logged_histories(tmp_path: Path, capsys) -> None:
    first = _fit(tmp_path, "train.max_epochs=4", "train.patience=10")
    second = _fit(tmp_path, "train.max_epochs=3", "train.patience=10", "model.dim=8")
    capsys.readouterr()
    png, points = tmp_path / "plots" / "c.png", tmp_path / "c.csv"
    assert main(["curves", first, second, "--metric", "val/ndcg@20", "--metric", "train/loss",
                 "--tracking-uri", _uri(tmp_path), "--out", str(png), "--csv", str(points)]) == 0
    out = capsys.readouterr().out

    client = MlflowClient(_uri(tmp_path))
    rows = _rows(points)
    for run_id, epochs in ((first, 4), (second, 3)):
        for key in ("val/ndcg_at_20", "train/loss"):
            logged = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            mine = [r for r in rows if r["run_id"] == run_id and r["metric"] == key]
            assert [int(r["epoch"]) for r in mine] == [m.step for m in logged] == list(range(epochs))
            assert [float(r["value"]) for r in mine] == [m.value for m in logged]
        # The summary's best validation epoch is the history's argmax; the last is the last epoch.
        ndcg = [m.value for m in sorted(client.get_metric_history(run_id, "val/ndcg_at_20"), key=lambda m: m.step)]
        line = next(text for text in out.splitlines() if run_id[:8] in text and "val/ndcg_at_20" in text)
        _, _, count, last_epoch, last, best_epoch, best = line.rsplit(maxsplit=6)
        assert (int(count), int(last_epoch), float(last)) == (epochs, epochs - 1, round(ndcg[-1], 4))
        assert (int(best_epoch), float(best)) == (int(np.argmax(ndcg)), round(max(ndcg), 4))
    picture = image.imread(png)
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0] > 100  # two panels side by side
    assert not [p for p in png.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_refits_default_curve_is_its_test_curve(tmp_path: Path, capsys) -> None:
    run_id = _fit(tmp_path, "train.refit_epochs=4", "train.refit_test_every=2")
    points = tmp_path / "c.csv"
    assert main(["curves", run_id, "--tracking-uri", _uri(tmp_path), "--out", str(tmp_path / "c.png"),
                 "--csv", str(points), "--reference", "refit/test/ndcg@20=0.5"]) == 0
    rows = _rows(points)
    # No selection run, so no val/ curve: the monitor's refit test curve alone, at epochs 1 and 3.
    assert {r["metric"] for r in rows} == {"refit/test/ndcg_at_20"}
    assert [int(r["epoch"]) for r in rows] == [1, 3]
    final = MlflowClient(_uri(tmp_path)).get_run(run_id).data.metrics["test/ndcg_at_20"]
    assert float(rows[-1]["value"]) == pytest.approx(final)


def test_a_step_logged_twice_keeps_its_last_value(tmp_path: Path, capsys) -> None:
    # A resumed fit redoes its interrupted epoch and logs that step again.
    client = MlflowClient(_uri(tmp_path))
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    for step, value, timestamp in ((0, 0.1, 1000), (1, 0.2, 2000), (1, 0.3, 3000), (2, 0.25, 4000)):
        client.log_metric(run_id, "val/recall_at_20", value, timestamp=timestamp, step=step)
    points = tmp_path / "c.csv"
    assert main(["curves", run_id, "--metric", "val/recall@20", "--tracking-uri", _uri(tmp_path),
                 "--out", str(tmp_path / "c.png"), "--csv", str(points)]) == 0
    assert [(int(r["epoch"]), float(r["value"])) for r in _rows(points)] == [(0, 0.1), (1, 0.3), (2, 0.25)]


def test_best_is_the_lowest_for_a_loss_and_the_earliest_on_ties() -> None:
    curve = Curve("r", "n", "m", (0, 1, 2, 3), (0.2, 0.5, float("nan"), 0.5))
    assert curve.best() == (1, 0.5)
    assert curve.best(higher_is_better=False) == (0, 0.2)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["RUN", "--metric", "val/nothing@20"], "no metric 'val/nothing_at_20'"),
        (["0123456789abcdef0123456789abcdef"], "no run '0123456789abcdef0123456789abcdef'"),
        (["RUN", "--metric", "train/loss", "--reference", "val/ndcg@20=0.3"], "not a plotted metric"),
        (["RUN", "--reference", "0.3"], "expected METRIC=NUMBER"),
        (["RUN", "--reference", "val/ndcg@20=high"], "expected METRIC=NUMBER"),
    ],
)
def test_mistakes_exit_2_with_one_line_and_write_nothing(arguments, message, tmp_path: Path, capsys) -> None:
    run_id = _fit(tmp_path, "train.max_epochs=2")
    capsys.readouterr()
    png = tmp_path / "c.png"
    arguments = [run_id if a == "RUN" else a for a in arguments]
    assert main(["curves", *arguments, "--tracking-uri", _uri(tmp_path), "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not png.exists()


def test_an_output_that_is_a_folder_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["curves", "abc", "--tracking-uri", _uri(tmp_path), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_missing_store_exits_2(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["curves", "abc", "--tracking-uri", uri, "--out", str(tmp_path / "c.png")]) == 2
    assert "no tracking store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
