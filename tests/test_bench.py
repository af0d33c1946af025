"""`recsys bench speed` runs real fits in subprocesses and reads their costs back from MLflow."""

from __future__ import annotations

from pathlib import Path

from recsys.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_bench_speed_times_a_config_with_overrides(tmp_path: Path, capsys) -> None:
    out = tmp_path / "speed.md"
    config = REPO / "configs" / "quickstart.yaml"
    code = main([
        "bench", "speed", "--configs", str(config), "--epochs", "2", "--data-root", str(REPO / "data"),
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "model.dim=8", "sampler.n_negatives=2",
    ])
    assert code == 0
    report = out.read_text()
    assert "Overrides: `model.dim=8 sampler.n_negatives=2`" in report
    (row,) = [line for line in report.splitlines() if line.startswith(f"| {config} |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "sample" and cells[4] == "2"  # dataset, epochs
    assert float(cells[5].split()[0]) > 0  # train s/epoch median
    assert report in capsys.readouterr().out + "\n"


def test_bench_speed_names_a_missing_config(tmp_path: Path, capsys) -> None:
    code = main(["bench", "speed", "--configs", str(tmp_path / "nope.yaml"), "--data-root", str(REPO / "data")])
    assert code == 2
    assert "nope.yaml: no such config file" in capsys.readouterr().err
