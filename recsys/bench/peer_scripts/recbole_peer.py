"""RecBole's own training and evaluation of one model on an exported split, timed per epoch.

SPEC: ``model`` (RecBole's name: ``BPR``, ``LightGCN``), ``dataset`` and ``config_file`` (the export's
``recbole.yaml``, which reads the split as it is), ``settings`` (RecBole config keys mirroring our
config), ``threads`` and ``eval_users_per_batch``. RecBole's own ``Trainer.fit`` runs ``epochs`` epochs
with a validation pass after each; its ``_train_epoch`` and ``_valid_epoch`` are timed exactly where
``fit`` times them for its log, then one test pass is timed. See ``peer_scripts/__init__.py``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peer_io import peak_rss_mb, write_result


def main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    # RecBole's Config reads `--key=value` settings from the command line: leave it only the settings.
    sys.argv = sys.argv[:1]
    try:
        import recbole
        import torch
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, get_trainer, init_seed
    except ImportError as error:
        return write_result(result_path, {"unavailable": str(error)})

    torch.set_num_threads(spec["threads"])
    config = Config(model=spec["model"], dataset=spec["dataset"], config_file_list=[spec["config_file"]],
                    config_dict=spec["settings"])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    # RecBole's full-ranking batch size counts scores (users x items, padding item included): the same
    # number of users per batch as ours.
    config["eval_batch_size"] = spec["eval_users_per_batch"] * dataset.item_num
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    # RecBole logs but keeps no per-epoch times: time the two calls that its fit times for that log.
    train_s: list[float] = []
    valid_s: list[float] = []
    trainer._train_epoch = _timed(trainer._train_epoch, train_s)
    trainer._valid_epoch = _timed(trainer._valid_epoch, valid_s)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    started = time.perf_counter()
    trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    test_s = time.perf_counter() - started
    return write_result(result_path, {
        "library": f"RecBole {recbole.__version__}",
        "epochs": len(train_s),
        "epoch_train_s": train_s,
        "val_eval_s": valid_s,
        "test_eval_s": test_s,
        "peak_rss_mb": peak_rss_mb(),
        "train_pairs": len(train_data.dataset),
        "test_users": len(test_data.uid_list),
        "n_items": dataset.item_num - 1,  # without RecBole's padding item 0
    })


def _timed(method: Callable[..., Any], seconds: list[float]) -> Callable[..., Any]:
    """``method``, appending the seconds of each call to ``seconds``."""
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = method(*args, **kwargs)
        seconds.append(time.perf_counter() - started)
        return result
    return timed


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
