"""``recsys data export NAME --format recbole``: our cached split as RecBole atomic files.

RecBole's ``benchmark_filename`` feature reads a pre-split dataset from ``data_path/NAME/NAME.<part>.inter``
and keeps the parts as they are, so the same train / validation / test interactions can be run in RecBole
for a side-by-side check. The files use the original user and item ids (tokens), plus ``rating`` and
``timestamp`` when our split keeps them.

RecBole 1.2.1 reads a dataset named ``ml-100k`` from the example bundled with it, whatever ``data_path``
says (``Config._set_default_parameters``), so that one is exported as ``ml-100k-recsys``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.config import DataConfig
from recsys.data.interactions import Interactions, Split
from recsys.errors import UserError

__all__ = ["RecBoleExport", "export_recbole", "recbole_config", "recbole_frame", "recbole_name", "write_recbole"]

CONFIG_NAME = "recbole.yaml"
# Dataset names RecBole reads from its own files, not from data_path.
_RECBOLE_BUNDLED = ("ml-100k",)


@dataclass(frozen=True)
class RecBoleExport:
    """Where an export went: ``folder`` (``OUT/NAME``) with one ``.inter`` file per part, and the RecBole
    config that reads it (also written as ``folder / recbole.yaml``). ``name`` is the RecBole dataset name
    (``recbole_name``)."""

    name: str
    folder: Path
    counts: dict[str, int]
    recbole_config: str

    def summary(self) -> str:
        parts = ", ".join(f"{count} {part}" for part, count in self.counts.items())
        return f"{self.name}: split written as RecBole atomic files in {self.folder} ({parts} interactions)"


def export_recbole(config: DataConfig, data_root: Path, seed: int, out: Path,
                   cache_dir: Path | None = None) -> RecBoleExport:
    """Write the split of ``config`` (``load_split``: from the cache when there) under ``out / config.name``.

    Raises:
        UserError: ``config`` is session data (export writes interaction data only).
    """
    if config.sessions:
        raise UserError(f"{config.name}: export supports interaction data only, and format "
                        f"{config.format!r} is session data")
    from recsys.data.loading import load_split

    split = load_split(config, data_root, seed, cache_dir)
    return write_recbole(split, config.name, out)


def recbole_frame(part: Interactions, rating: bool, timestamp: bool) -> pl.DataFrame:
    """One part as a RecBole ``.inter`` table: original ids as tokens, then ``rating`` / ``timestamp``
    (whole numbers written without a decimal point)."""
    columns = {
        "user_id:token": part.user_ids.to_numpy()[part.users],
        "item_id:token": part.item_ids.to_numpy()[part.items],
    }
    if rating:
        columns["rating:float"] = _compact(part.ratings)
    if timestamp:
        columns["timestamp:float"] = _compact(part.timestamps)
    return pl.DataFrame(columns)


def recbole_name(name: str) -> str:
    """The RecBole dataset name for our dataset ``name``: itself, unless RecBole would read its own copy."""
    return f"{name}-recsys" if name in _RECBOLE_BUNDLED else name


def write_recbole(split: Split, name: str, out: Path) -> RecBoleExport:
    """Write ``split`` as ``out/N/N.{train,valid,test}.inter`` and ``out/N/recbole.yaml``, where ``N`` is
    ``recbole_name(name)``.

    The files are written into a staging folder beside the target first. A new target folder is that
    folder renamed; into an existing one each file is moved with ``os.replace``, so other files there (a
    ``.item`` or ``.user`` feature file, say) are kept and a reader never sees a half-written file.
    """
    # The three folds only: a randomly exposed test set (``split.exposure``) has no RecBole counterpart.
    parts = {"train": split.train, "valid": split.valid, "test": split.test}
    name = recbole_name(name)
    rating = all(part.ratings is not None for part in parts.values())
    timestamp = all(part.timestamps is not None for part in parts.values())
    folder = out / name
    config = recbole_config(name, out, rating, timestamp)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{name}.export-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        for part_name, part in parts.items():
            frame = recbole_frame(part, rating, timestamp)
            frame.write_csv(staging / f"{name}.{part_name}.inter", separator="\t", quote_style="never")
        (staging / CONFIG_NAME).write_text(config)
        if not folder.exists():
            os.rename(staging, folder)
        else:
            for path in staging.iterdir():
                os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RecBoleExport(name=name, folder=folder, counts={k: len(v) for k, v in parts.items()},
                         recbole_config=config)


def recbole_config(name: str, out: Path, rating: bool, timestamp: bool) -> str:
    """A RecBole config that reads the exported parts as they are (no filtering, no re-splitting)."""
    columns = ["user_id", "item_id"] + ["rating"] * rating + ["timestamp"] * timestamp
    path = (out / name / CONFIG_NAME).resolve()
    return "\n".join([
        f"# RecBole config for the split exported by `recsys data export` (written to {path}).",
        f"# Run: python run_recbole.py --model=BPR --dataset={name} --config_files={path}",
        f"data_path: {out.resolve()}",
        "benchmark_filename: [train, valid, test]",
        "USER_ID_FIELD: user_id",
        "ITEM_ID_FIELD: item_id",
        "load_col:",
        f"  inter: [{', '.join(columns)}]",
        "# The parts are final: no filtering that would drop users or items.",
        "rm_dup_inter: ~",
        "val_interval: ~",
        "filter_inter_by_user_or_item: false",
        "user_inter_num_interval: '[0,inf)'",
        "item_inter_num_interval: '[0,inf)'",
        "",
    ])


def _compact(values: np.ndarray) -> np.ndarray:
    """Whole numbers as int64 (``881250949``, not ``881250949.0``); anything else as float64."""
    values = np.asarray(values, dtype=np.float64)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
        return values.astype(np.int64)
    return values
