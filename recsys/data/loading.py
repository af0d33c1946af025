"""From a ``data`` config to a cached ``Split``: read -> implicit -> dedupe -> k-core -> encode -> split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.cache import cache_key, cached_split, default_cache_dir
from recsys.data.config import DataConfig
from recsys.data.interactions import Split
from recsys.data.preprocess import collapse_duplicates, encode, k_core, to_implicit
from recsys.data.readers import read_interactions
from recsys.data.sessions.sessions import SessionSplit
from recsys.data.splits import carve_validation, leave_one_out, random_split, temporal_split
from recsys.errors import DataError

__all__ = ["build_split", "dataset_files", "load_session_split", "load_split"]


def dataset_files(config: DataConfig, data_root: Path) -> dict[str, Path]:
    """The dataset's files by role (``all`` or ``train``/``valid``/``test``), checked to exist."""
    if not data_root.is_dir():
        raise DataError(f"data root {data_root} does not exist (set --data-root or RECSYS_DATA)")
    folder = data_root / config.name
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    if config.split.method == "given":
        names = {"train": config.train_file, "valid": config.valid_file, "test": config.test_file}
    else:
        names = {"all": config.file}
    files = {role: folder / name for role, name in names.items() if name is not None}
    for path in files.values():
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    return files


def load_split(config: DataConfig, data_root: Path, seed: int, cache_dir: Path | None = None) -> Split:
    """The split for ``config``: from the cache when its files and settings are unchanged.

    Args:
        config: the ``data`` section.
        data_root: folder holding one folder per dataset.
        seed: the experiment seed (used unless ``split.seed`` is set).
        cache_dir: where splits are cached (default: ``default_cache_dir()``).
    """
    files = dataset_files(config, data_root)
    split_seed = config.split.seed if config.split.seed is not None else seed
    settings = {"data": config.model_dump(mode="json"), "seed": split_seed}
    key = cache_key(files.values(), settings)
    directory = (cache_dir or default_cache_dir()) / "splits" / f"{config.name}-{key[:20]}"
    return cached_split(directory, lambda: build_split(config, files, split_seed))


def build_split(config: DataConfig, files: dict[str, Path], seed: int) -> Split:
    """Read, preprocess and split (no cache)."""
    # An exposed test file keeps its sub-threshold rows: they are the exposed but irrelevant items.
    frames = {
        role: _read(config, path, threshold=not (config.exposed_test and role == "test"))
        for role, path in files.items()
    }
    rng = np.random.default_rng(seed)
    if config.split.method == "given":
        parts = encode(frames)
        exposure = None
        if config.exposed_test:
            exposure = parts["test"]
            if exposure.ratings is None:
                raise DataError(f"{files['test']}: exposed_test needs a rating column")
            parts["test"] = exposure.select(exposure.ratings >= config.rating_threshold)
        if "valid" in parts:
            split = Split(train=parts["train"], valid=parts["valid"], test=parts["test"])
        else:
            split = carve_validation(parts["train"], parts["test"], config.split.valid_ratio, rng)
        return split if exposure is None else replace(split, exposure=exposure)

    frame = k_core(frames["all"], config.min_user_interactions, config.min_item_interactions)
    if frame.height == 0:
        raise DataError(f"{files['all']}: no interactions left after k-core filtering")
    data = encode({"all": frame})["all"]
    if config.split.method == "random":
        return random_split(data, config.split.ratios, rng)
    if config.split.method == "leave_one_out":
        return leave_one_out(data)
    return temporal_split(data, config.split.ratios)


def _read(config: DataConfig, path: Path, threshold: bool = True) -> pl.DataFrame:
    frame = read_interactions(
        path,
        config.format,
        columns=config.columns.model_dump(),
        separator=config.separator,
        has_header=config.has_header,
    )
    frame = collapse_duplicates(to_implicit(frame, config.rating_threshold if threshold else None, str(path)))
    if frame.height == 0:
        raise DataError(f"{path}: no interactions left after the rating threshold")
    return frame


def load_session_split(config: DataConfig, data_root: Path) -> SessionSplit:
    """The session split of a session-format ``config``: given files, or TRON's split of one event file by
    the last days (``split.method: last_days``), read with the format's reader.

    Not cached: reading and encoding the shipped session samples takes well under a second.
    """
    from recsys.data.sessions import given_split, read_sessions, tron_split

    files = dataset_files(config, data_root)
    frames = {role: read_sessions(path, config.format) for role, path in files.items()}
    if config.split.method == "last_days":
        return tron_split(frames["all"], min_item_support=config.min_item_interactions,
                          test_days=config.split.test_days, valid_days=config.split.valid_days)
    # Without a validation file, the last valid_ratio of the training sessions validate.
    return given_split(frames["train"], frames["test"], frames.get("valid"), valid_ratio=config.split.valid_ratio)
