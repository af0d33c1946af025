"""Peers of `recsys bench speed`: RecBole and implicit on exactly our split, each in its own interpreter.

A peer is another library's model that mirrors one of ours: RecBole's BPR and implicit's BPR mirror
MF trained with BPR, RecBole's LightGCN our LightGCN. It runs in the *peers* interpreter (``--peers``:
RecBole 1.2.1 needs ``numpy<2``, ``pandas<3`` and ``scipy<1.13``, so it lives in a virtualenv of its
own, see ``pyproject.toml``'s ``peers`` dependency group) as a self-contained script from
``peer_scripts/`` on our split exported as RecBole atomic files (``recsys data export``), so both train
and rank the same interactions.

RecBole mirrors the config: embedding size, batch size, Adam and its learning rate, uniform negatives
per positive (drawn from items the user has not interacted with, as ours), LightGCN's layers and
regularisation weight, the metrics and cut-offs, a validation pass after each epoch, full ranking with
the same users per evaluation batch. implicit's BPR (Cython SGD, its default learning rate) mirrors
only the factors and the number of epochs; its evaluation is one batched top-k ``recommend``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import ExperimentConfig
from recsys.data.export import CONFIG_NAME, RecBoleExport
from recsys.errors import UserError

__all__ = ["PEERS", "Peer", "PeerResult", "check_interpreter", "peer_row", "peers_for", "recbole_settings",
           "run_peer", "speed_ratio"]

SCRIPTS = Path(__file__).parent / "peer_scripts"

# Our metric names -> RecBole's.
_RECBOLE_METRICS = {"recall": "Recall", "ndcg": "NDCG", "mrr": "MRR", "hit": "Hit", "precision": "Precision",
                    "map": "MAP"}


@dataclass(frozen=True)
class PeerResult:
    """What a peer script measured (``peer_scripts/__init__.py`` has the protocol)."""

    library: str
    epochs: int
    epoch_train_s: list[float]
    val_eval_s: list[float]
    test_eval_s: float
    peak_rss_mb: float
    train_pairs: int
    test_users: int
    n_items: int


@dataclass(frozen=True)
class Peer:
    """A peer ``model`` of ``library``, run by ``script`` with the spec ``spec(config, export, epochs,
    threads)``, compared with our model named ``ours``."""

    library: str
    model: str
    ours: str
    script: str
    spec: Callable[[ExperimentConfig, RecBoleExport, int, int], dict[str, Any]]

    @property
    def label(self) -> str:
        return f"{self.library} {self.model}"


def recbole_settings(config: ExperimentConfig, epochs: int) -> dict[str, Any]:
    """RecBole config keys that mirror ``config`` for ``epochs`` epochs, each followed by validation."""
    metrics = [_RECBOLE_METRICS[name] for name in config.eval.metrics if name in _RECBOLE_METRICS]
    settings: dict[str, Any] = {
        "seed": config.seed,
        "use_gpu": False,
        "epochs": epochs,
        "eval_step": 1,
        "stopping_step": epochs + 1,
        "embedding_size": config.model.dim,
        "train_batch_size": config.train.batch_size,
        "learner": "adam",
        "learning_rate": config.train.lr,
        "weight_decay": 0.0,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": config.sampler.n_negatives},
        # The export's benchmark_filename keeps the split as it is; RecBole still wants a split entry.
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
        "metrics": metrics,
        "topk": list(config.eval.ks),
        "valid_metric": _recbole_monitor(config.train.monitor, metrics, config.eval.ks),
        "show_progress": False,
        "checkpoint_dir": "saved",  # relative to the scratch working directory
    }
    if config.model.name == "lightgcn":
        settings |= {"n_layers": config.model.layers, "reg_weight": config.model.reg_weight}
    return settings


def _recbole_monitor(monitor: str, metrics: list[str], ks: tuple[int, ...]) -> str:
    """``val/mrr@10`` -> ``MRR@10``; RecBole's first metric at the first cut-off for anything else."""
    name, _, k = monitor.removeprefix("val/").partition("@")
    if name in _RECBOLE_METRICS and k:
        return f"{_RECBOLE_METRICS[name]}@{k}"
    return f"{metrics[0]}@{ks[0]}"


def _recbole_spec(model: str) -> Callable[[ExperimentConfig, RecBoleExport, int, int], dict[str, Any]]:
    def spec(config: ExperimentConfig, export: RecBoleExport, epochs: int, threads: int) -> dict[str, Any]:
        return {"model": model, "dataset": export.name, "config_file": str(export.folder / CONFIG_NAME),
                "settings": recbole_settings(config, epochs), "threads": threads,
                "eval_users_per_batch": config.eval.batch_size}
    return spec


def _implicit_spec(config: ExperimentConfig, export: RecBoleExport, epochs: int, threads: int) -> dict[str, Any]:
    folds = {fold: str(export.folder / f"{export.name}.{fold}.inter") for fold in ("train", "valid", "test")}
    return {**folds, "factors": config.model.dim, "iterations": epochs, "threads": threads, "seed": config.seed,
            "top_k": max(config.eval.ks)}


PEERS: tuple[Peer, ...] = (
    Peer("RecBole", "BPR", "mf", "recbole_peer.py", _recbole_spec("BPR")),
    Peer("implicit", "BPR", "mf", "implicit_peer.py", _implicit_spec),
    Peer("RecBole", "LightGCN", "lightgcn", "recbole_peer.py", _recbole_spec("LightGCN")),
)


def peers_for(config: ExperimentConfig) -> list[Peer]:
    """The peers that mirror ``config``: its model trained with BPR (every peer's loss)."""
    if config.loss.name != "bpr":
        return []
    return [peer for peer in PEERS if peer.ours == config.model.name]


def check_interpreter(python: Path) -> None:
    """Raise UserError unless ``python`` is an executable file (checked before a long benchmark)."""
    if not (python.is_file() and os.access(python, os.X_OK)):
        raise UserError(f"--peers {python}: no such Python interpreter (make one as pyproject.toml's `peers` "
                        "dependency group says)")


def run_peer(python: Path, peer: Peer, config: ExperimentConfig, export: RecBoleExport, epochs: int, threads: int,
             workdir: Path) -> PeerResult | str:
    """Run ``peer`` in ``python`` on ``export`` mirroring ``config``; the result, or why the peer is
    unavailable there (its import failed).

    The script runs in ``workdir`` (RecBole writes its logs into the working directory).

    Raises:
        RuntimeError: the script failed (with the end of its stderr).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = workdir / "spec.json", workdir / "result.json"
    spec_path.write_text(json.dumps(peer.spec(config, export, epochs, threads)))
    # Not Path.resolve(): a virtualenv's python is a symlink, and its target would run without the venv.
    command = [os.path.abspath(python), str(SCRIPTS / peer.script), str(spec_path), str(result_path)]
    print(f"bench: peer {peer.label} on {config.data.name} for {epochs} epochs ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    result = json.loads(result_path.read_text())
    if "unavailable" in result:
        return result["unavailable"]
    return PeerResult(**result)


def speed_ratio(peer_s_per_epoch: float, ours_s_per_epoch: float) -> str:
    """The peer's training seconds per epoch over ours, as a table cell (``3.25x``: the peer is slower)."""
    return f"{peer_s_per_epoch / ours_s_per_epoch:.2f}x"


def peer_row(peer: Peer, result: PeerResult, config: Path, dataset: str, ours_s_per_epoch: float) -> tuple[str, ...]:
    """A row of the speed table for ``result``, in the columns of ours, against our run of ``config``."""
    train = result.epoch_train_s
    median = statistics.median(train)
    spread = f" ({min(train):.4f}-{max(train):.4f})" if len(train) > 1 else ""
    return (
        f"{result.library} {peer.model} (vs {config})",
        dataset,
        f"{result.train_pairs:,}",
        f"{result.test_users:,} x {result.n_items:,}",
        str(result.epochs),
        f"{median:.4f}{spread}",
        f"{statistics.median(result.val_eval_s):.3f}" if result.val_eval_s else "-",
        f"{result.test_eval_s:.3f}",
        f"{result.peak_rss_mb:.0f}",
        speed_ratio(median, ours_s_per_epoch),
    )
