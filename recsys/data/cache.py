"""A split cache: parquet files keyed by a hash of the input files and the settings, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.data.interactions import Interactions, Split

__all__ = ["cache_key", "cached_split", "default_cache_dir"]

# Bump when the way splits are computed or stored changes: old entries then stop matching.
_CACHE_VERSION = "split-v1"
_PARTS = ("train", "valid", "test", "exposure")


def default_cache_dir() -> Path:
    """``$RECSYS_CACHE``, else ``$XDG_CACHE_HOME/recsys``, else ``~/.cache/recsys``."""
    if "RECSYS_CACHE" in os.environ:
        return Path(os.environ["RECSYS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recsys"


def cache_key(files: Iterable[Path], settings: dict[str, Any]) -> str:
    """sha256 over the cache version, the settings (as sorted JSON) and every file's bytes."""
    digest = hashlib.sha256(_CACHE_VERSION.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cached_split(directory: Path, build: Callable[[], Split]) -> Split:
    """Load the split stored in ``directory``, or build it and store it there atomically.

    The files are written into a temporary sibling folder that is renamed into place, so a reader sees
    either no entry or a complete one, and an interrupted write leaves nothing behind that is used later.
    """
    if directory.is_dir():
        return _read(directory)
    split = build()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex}"
    try:
        _write(staging, split)
        os.rename(staging, directory)
    except OSError:
        # Another process stored the same entry first (rename onto a non-empty folder fails), or the
        # cache is not writable: the split in memory is still right.
        pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return split


def _write(folder: Path, split: Split) -> None:
    folder.mkdir(parents=True)
    frames = []
    for index, name in enumerate(_PARTS):
        part = split.parts().get(name)
        if part is None:
            continue
        columns: dict[str, Any] = {
            "user": part.users,
            "item": part.items,
            "part": np.full(len(part), index, dtype=np.int8),
        }
        if part.timestamps is not None:
            columns["timestamp"] = part.timestamps
        if part.ratings is not None:
            columns["rating"] = part.ratings
        frames.append(pl.DataFrame(columns))
    pl.concat(frames, how="diagonal").write_parquet(folder / "interactions.parquet")
    pl.DataFrame({"id": split.train.user_ids}).write_parquet(folder / "user_ids.parquet")
    pl.DataFrame({"id": split.train.item_ids}).write_parquet(folder / "item_ids.parquet")


def _read(folder: Path) -> Split:
    frame = pl.read_parquet(folder / "interactions.parquet")
    user_ids = pl.read_parquet(folder / "user_ids.parquet")["id"]
    item_ids = pl.read_parquet(folder / "item_ids.parquet")["id"]
    parts = {}
    for index, name in enumerate(_PARTS):
        part = frame.filter(pl.col("part") == index)
        if name == "exposure" and part.height == 0:
            continue
        timestamps = part["timestamp"] if "timestamp" in part.columns else None
        ratings = part["rating"] if "rating" in part.columns else None
        parts[name] = Interactions(
            users=part["user"].to_numpy(writable=True),
            items=part["item"].to_numpy(writable=True),
            n_users=user_ids.len(),
            n_items=item_ids.len(),
            user_ids=user_ids,
            item_ids=item_ids,
            timestamps=None if timestamps is None or timestamps.null_count() else timestamps.to_numpy(writable=True),
            ratings=None if ratings is None or ratings.null_count() else ratings.to_numpy(writable=True),
        )
    return Split(**parts)
