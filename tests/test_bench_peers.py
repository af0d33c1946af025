"""Peers of `recsys bench speed`: which peer mirrors which config and how, the ratio cell, and the
peer-script protocol. Real RecBole and implicit runs need the peers interpreter (the `peers` dependency
group): set RECSYS_PEERS_PYTHON=.venv-peers/bin/python to run them."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from recsys.bench.peers import PEERS, PeerResult, peer_row, peers_for, recbole_settings, run_peer, speed_ratio
from recsys.bench.speed import HEADER
from recsys.cli import main
from recsys.config import load_config
from recsys.data.export import export_recbole

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
QUICKSTART = CONFIGS / "quickstart.yaml"
PEERS_PYTHON = os.environ.get("RECSYS_PEERS_PYTHON")


def _labels(path: Path, *overrides: str) -> list[str]:
    return [peer.label for peer in peers_for(load_config(path, overrides))]


def test_each_peer_mirrors_our_model_trained_with_bpr() -> None:
    assert _labels(CONFIGS / "ml-100k" / "mf_bpr.yaml") == ["RecBole BPR", "implicit BPR"]
    assert _labels(CONFIGS / "gowalla" / "lightgcn.yaml") == ["RecBole LightGCN"]
    assert _labels(CONFIGS / "ml-100k" / "simplex.yaml") == []
    assert _labels(CONFIGS / "ml-100k" / "mf_bpr.yaml", "loss.name=sampled_softmax") == []


def test_recbole_settings_mirror_the_config() -> None:
    ml100k = recbole_settings(load_config(CONFIGS / "ml-100k" / "lightgcn.yaml"), epochs=5)
    assert ml100k["n_layers"] == 2 and ml100k["reg_weight"] == 1e-5
    assert (ml100k["embedding_size"], ml100k["train_batch_size"], ml100k["learning_rate"]) == (64, 2048, 1e-3)
    assert ml100k["train_neg_sample_args"] == {"distribution": "uniform", "sample_num": 1}
    assert ml100k["metrics"] == ["Recall", "NDCG", "MRR", "Hit", "Precision", "MAP"]
    assert ml100k["topk"] == [10, 20] and ml100k["valid_metric"] == "MRR@10"
    assert (ml100k["epochs"], ml100k["eval_step"], ml100k["eval_args"]["mode"]) == (5, 1, "full")
    assert ml100k["stopping_step"] > 5  # RecBole's early stopping never cuts the timed epochs short
    gowalla = recbole_settings(load_config(CONFIGS / "gowalla" / "lightgcn.yaml"), epochs=5)
    assert gowalla["n_layers"] == 3 and gowalla["valid_metric"] == "Recall@20"
    assert "n_layers" not in recbole_settings(load_config(CONFIGS / "gowalla" / "mf_bpr.yaml"), epochs=5)


def test_a_peer_row_has_our_columns_and_its_ratio_to_ours() -> None:
    recbole = PeerResult(library="RecBole 1.2.1", epochs=3, epoch_train_s=[0.3, 0.1, 0.2], val_eval_s=[0.05, 0.07, 0.06],
                         test_eval_s=0.08, peak_rss_mb=512.4, train_pairs=80808, test_users=943, n_items=1682)
    row = peer_row(PEERS[0], recbole, Path("configs/ml-100k/mf_bpr.yaml"), "ml-100k", ours_s_per_epoch=0.04)
    assert len(row) == len(HEADER)
    assert row == ("RecBole 1.2.1 BPR (vs configs/ml-100k/mf_bpr.yaml)", "ml-100k", "80,808", "943 x 1,682", "3",
                   "0.2000 (0.1000-0.3000)", "0.060", "0.080", "512", "5.00x")
    implicit = PeerResult(library="implicit 0.7.3", epochs=5, epoch_train_s=[0.004], val_eval_s=[], test_eval_s=0.02,
                          peak_rss_mb=200.0, train_pairs=80808, test_users=943, n_items=1682)
    row = peer_row(PEERS[1], implicit, Path("configs/ml-100k/mf_bpr.yaml"), "ml-100k", ours_s_per_epoch=0.04)
    assert row[4:7] == ("5", "0.0040", "-") and row[-1] == "0.10x"
    assert speed_ratio(1.0, 4.0) == "0.25x" and speed_ratio(0.0375, 0.0375) == "1.00x"


@pytest.mark.parametrize("peer", PEERS, ids=lambda peer: peer.label)
def test_a_peer_missing_from_the_interpreter_is_reported_not_run(tmp_path: Path, peer) -> None:
    """The protocol's other outcome, with this interpreter, where the peer library is not installed."""
    module = "recbole" if peer.library == "RecBole" else "implicit"
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is importable here")
    config = load_config(QUICKSTART)
    export = export_recbole(config.data, REPO / "data", config.seed, tmp_path / "export", tmp_path / "cache")
    result = run_peer(Path(sys.executable), peer, config, export, epochs=2, threads=1, workdir=tmp_path / "run")
    assert result == f"No module named '{module}'"


@pytest.mark.skipif(not PEERS_PYTHON, reason="set RECSYS_PEERS_PYTHON to a Python with the `peers` group")
def test_peers_run_on_the_same_split_beside_ours(tmp_path: Path) -> None:
    out = tmp_path / "speed.md"
    code = main(["bench", "speed", "--configs", str(QUICKSTART), "--epochs", "2", "--data-root", str(REPO / "data"),
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--peers", str(PEERS_PYTHON),
                 "--peer-datasets", "sample"])
    assert code == 0
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.read_text().splitlines()
            if line.startswith("| ") and "sample" in line]
    ours, *peers = rows
    assert [row[0].split(" (vs")[0] for row in peers] == ["RecBole 1.2.1 BPR", "implicit 0.7.3 BPR"]
    for row in peers:
        assert row[2:5] == [ours[2], ours[3], "2"]  # the same train pairs, test users x items; 2 epochs
        assert float(row[5].split()[0]) > 0 and row[-1].endswith("x") and float(row[8]) > 0
        expected = float(row[5].split()[0]) / float(ours[5].split()[0])
        assert float(row[-1][:-1]) == pytest.approx(expected, abs=0.01)
