"""`train.pair_sampling`: every training pair once per epoch, or pairs drawn user-uniformly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.config import load_config
from recsys.data.batching import ShuffledPairs, UserUniformPairs
from recsys.data.loading import load_split
from recsys.experiment import _datamodule

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "quickstart.yaml")


def _common(tmp_path: Path) -> list[str]:
    return ["--data-root", str(REPO / "data"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]


def test_the_config_picks_the_pair_source(tmp_path: Path) -> None:
    for value, kind in (("interactions", ShuffledPairs), ("users", UserUniformPairs)):
        config = load_config(CONFIG, [f"train.pair_sampling={value}"])
        split = load_split(config.data, REPO / "data", config.seed, tmp_path / "cache")
        pairs = _datamodule(config, split)._train
        assert type(pairs) is kind and len(pairs) == -(-len(split.train) // config.train.batch_size)
    assert load_config(CONFIG).train.pair_sampling == "interactions"  # the default
    # The user-uniform epoch spreads its pairs over users evenly, unlike the sample's skewed degrees.
    users = np.concatenate([u.numpy() for u, _ in pairs])
    per_user = np.bincount(users, minlength=split.train.n_users)[split.train.user_counts() > 0]
    degrees = split.train.user_counts()[split.train.user_counts() > 0]
    assert per_user.std() < 0.5 * degrees.std()


def test_a_user_uniform_fit_trains_and_logs_its_sampling(tmp_path: Path) -> None:
    assert main(["fit", "-c", CONFIG, *_common(tmp_path), "train.max_epochs=2", "train.pair_sampling=users"]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["train.pair_sampling"] == "users"
    assert 0 < run.data.metrics["test/ndcg_at_20"] <= 1


def test_bad_pair_sampling_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["fit", "-c", CONFIG, *_common(tmp_path), "train.pair_sampling=items"]) == 2
    err = capsys.readouterr().err
    assert "train.pair_sampling" in err and "Traceback" not in err
    sessions = str(REPO / "configs" / "yoochoose" / "sasrec.yaml")
    assert main(["fit", "-c", sessions, *_common(tmp_path), "train.pair_sampling=users"]) == 2
    assert "train.pair_sampling: 'users' is for user-item splits" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
