"""Paired in-process timing of `train.batches_per_call`: one batch per Lightning call against the default.

Trains configs/ml-100k/mf_bpr.yaml for 25 epochs with a bare Trainer (no validation, logger or
checkpoint), four times each way, alternating, and prints the median training seconds per epoch of
epochs 4-25 (docs/benchmarks.md, "Several batches per Lightning call"). Run from the repository root:

    python scripts/batches_per_call_ab.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import lightning.pytorch as L

from recsys.config import load_config
from recsys.experiment import _prepare


def epoch_seconds(config: Path, data_root: Path, per_call: int | None, epochs: int = 25) -> float:
    """Median seconds of training epochs 4..``epochs`` with ``per_call`` batches per call (None: default)."""
    overrides = [] if per_call is None else [f"train.batches_per_call={per_call}"]
    _, datamodule, model = _prepare(load_config(config, overrides), data_root, None)
    seconds: list[float] = []

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            seconds.append(time.perf_counter() - self.started)

    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[Clock()])
    trainer.fit(model, datamodule=datamodule)
    return statistics.median(seconds[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--config", type=Path, default=Path("configs/ml-100k/mf_bpr.yaml"))
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    for _ in range(args.repeats):
        for per_call in (1, None):
            label = "1" if per_call else "default"
            print(f"batches_per_call {label}: {epoch_seconds(args.config, args.data_root, per_call):.4f} s/epoch",
                  flush=True)


if __name__ == "__main__":
    main()
