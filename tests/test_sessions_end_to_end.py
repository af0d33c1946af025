"""`recsys fit` on session files: SASRec, SASRec+SSM and TRON objectives as configs, tracked runs with
every next item ranked; bad session input exits 2 with one line and opens no run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from mlflow.tracking import MlflowClient

from recsys.cli import main

OBJECTIVES = {
    "sasrec": ({"name": "uniform", "n_negatives": 1, "exclude_positives": True}, {"name": "bce"}),
    "sasrec_ssm": (
        {"name": "mixed", "samplers": [{"name": "uniform", "n_negatives": 64, "shared": True}, {"name": "in_batch", "n_negatives": 7}]},
        {"name": "sampled_softmax"},
    ),
    "tron": (
        {
            "name": "topk", "k": 10, "candidates": None,
            "base": {"name": "mixed", "samplers": [
                {"name": "uniform", "n_negatives": 64, "shared": True, "exclude_batch_positives": True},
                {"name": "in_batch", "n_negatives": 7},
            ]},
        },
        {"name": "sampled_softmax"},
    ),
}


def _write_sessions(path: Path, generator: np.random.Generator, n_sessions: int, first_id: int) -> int:
    """Yoochoose-format sessions of 2-6 clicks that mostly walk up the item ids; returns their events."""
    lines = ["SessionId\tItemId\tTime"]
    for session in range(first_id, first_id + n_sessions):
        start, length = generator.integers(0, 14), generator.integers(2, 7)
        for step in range(length):
            lines.append(f"{session}\t{100 + (start + step) % 20}\t{1.4e9 + session * 100 + step}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def _config(tmp_path: Path, objective: str) -> Path:
    sampler, loss = OBJECTIVES[objective]
    config = {
        "seed": 1,
        "data": {"name": "tiny", "format": "yoochoose", "train_file": "train.txt", "valid_file": "valid.txt",
                 "test_file": "test.txt", "split": {"method": "given"}},
        "model": {"name": "sasrec", "dim": 8, "layers": 1, "heads": 1, "dropout": 0.1, "max_len": 5},
        "sampler": sampler,
        "loss": loss,
        "train": {"batch_size": 16, "lr": 0.01, "max_epochs": 2, "patience": 2, "monitor": "val/recall@10"},
        "eval": {"ks": [5, 10], "metrics": ["recall", "mrr"], "batch_size": 7},
        "tracking": {"experiment": "sessions"},
    }
    path = tmp_path / f"{objective}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return tiny_sessions(tmp_path)


def tiny_sessions(tmp_path: Path) -> Path:
    """A data root holding the dataset ``tiny``: 80 train, 15 valid and 15 test sessions."""
    folder = tmp_path / "data" / "tiny"
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    _write_sessions(folder / "train.txt", generator, 80, 0)
    _write_sessions(folder / "valid.txt", generator, 15, 1000)
    _write_sessions(folder / "test.txt", generator, 15, 2000)
    return folder.parent


def _args(config: Path, data_root: Path, store: Path, *overrides: str) -> list[str]:
    return ["fit", "-c", str(config), "--data-root", str(data_root), "--tracking-uri", f"sqlite:///{store}",
            "--no-progress", *overrides]


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_each_objective_trains_and_ranks_every_next_item(objective: str, data_root: Path, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    assert main(_args(_config(tmp_path, objective), data_root, store)) == 0
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("sessions").experiment_id])
    metrics, tags = run.data.metrics, run.data.tags
    for name in ("recall_at_5", "mrr_at_5", "recall_at_10", "mrr_at_10"):
        assert 0.0 <= metrics[f"test/{name}"] <= 1.0
    assert metrics["test/mrr_at_10"] <= metrics["test/recall_at_10"]
    assert int(tags["data.train_sessions"]) == 80 and int(tags["data.n_items"]) <= 20
    # One per-prediction row for every test event that has a successor.
    artifact = client.download_artifacts(run.info.run_id, "per_user/test.parquet", str(tmp_path))
    per_prediction = pl.read_parquet(artifact)
    expected = int(tags["data.test_events"]) - int(tags["data.test_sessions"])
    assert per_prediction.height == expected
    assert per_prediction["prediction"].to_list() == list(range(expected))


def test_a_malformed_session_file_exits_2_with_one_line(data_root: Path, tmp_path: Path, capsys) -> None:
    test_file = data_root / "tiny" / "test.txt"
    test_file.write_text(test_file.read_text() + "2999\tnot-an-item\t1400000000\n")
    store = tmp_path / "mlflow.db"
    assert main(_args(_config(tmp_path, "sasrec"), data_root, store)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "test.txt" in err and "ItemId" in err
    assert not store.exists() or not MlflowClient(f"sqlite:///{store}").search_experiments(filter_string="name = 'sessions'")


def test_a_session_model_on_user_item_data_is_a_config_error(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path, "sasrec")
    assert main(_args(config, tmp_path, tmp_path / "m.db", "data.name=ml-100k", "data.format=recbole",
                      "data.file=ml-100k.inter", "data.train_file=null", "data.valid_file=null",
                      "data.test_file=null", "data.split.method=random")) == 2
    assert "trains on session data" in capsys.readouterr().err


def test_data_info_counts_sessions_and_events(data_root: Path, tmp_path: Path, capsys) -> None:
    assert main(["data", "info", "-c", str(_config(tmp_path, "sasrec")), "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "tiny (yoochoose sessions, given split" in out
    train_line = next(line for line in out.splitlines() if line.startswith("train"))
    assert train_line.split()[1] == "80"


def _otto_file(path: Path, generator: np.random.Generator, n_sessions: int, days: int) -> None:
    """OTTO-format sessions spread over ``days`` days, clicks and a few carts, items 0-19."""
    import json

    lines = []
    for session in range(n_sessions):
        start = 1_659_304_800_000 + int(session * days * 86_400_000 / n_sessions)
        first = generator.integers(0, 14)
        events = [{"aid": int((first + step) % 20), "ts": start + step * 60_000, "type": "carts" if step == 3 else "clicks"}
                  for step in range(int(generator.integers(2, 7)))]
        lines.append(json.dumps({"session": session, "events": events}))
    path.write_text("\n".join(lines) + "\n")


def test_tron_split_of_one_event_file_by_the_last_days(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "data" / "events"
    folder.mkdir(parents=True)
    _otto_file(folder / "train.jsonl", np.random.default_rng(1), 200, days=10)
    config = yaml.safe_load(_config(tmp_path, "sasrec").read_text())
    config["data"] = {"name": "events", "format": "otto", "file": "train.jsonl", "min_item_interactions": 5,
                      "split": {"method": "last_days", "test_days": 2, "valid_days": 2}}
    path = tmp_path / "events.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["data", "info", "-c", str(path), "--data-root", str(tmp_path / "data")]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[3:]}
    assert int(rows["train"][1]) + int(rows["valid"][1]) + int(rows["test"][1]) == 200  # every session >= 2 clicks
    assert 30 <= int(rows["test"][1]) <= 50 and 30 <= int(rows["valid"][1]) <= 50  # 2 of 10 days each
    assert main(_args(path, tmp_path / "data", tmp_path / "m.db")) == 0
    # Without validation days there is nothing to stop early on: a clear error, no run.
    config["data"]["split"] = {"method": "last_days", "test_days": 2}
    path.write_text(yaml.safe_dump(config))
    assert main(_args(path, tmp_path / "data", tmp_path / "n.db")) == 2
    assert "no validation sessions" in capsys.readouterr().err
