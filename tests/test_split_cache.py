"""The split cache (keyed, atomic, read back exactly) and the path from a ``data`` config to a split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from recsys.data.cache import cache_key, cached_split
from recsys.data.config import DataConfig, known_datasets, with_manifest_defaults
from recsys.data.interactions import Split
from recsys.data.loading import build_split, dataset_files, load_split
from recsys.data.preprocess import encode
from recsys.data.splits import leave_one_out
from recsys.errors import DataError


def _toy_rows(n_users: int = 5, per_user: int = 10) -> list[tuple[int, int, float, float]]:
    """(user, item, rating, timestamp) with original ids far from 0, so encoding matters."""
    return [
        (100 + u, 1000 + (3 * u + k) % 17, float(1 + (u + k) % 5), float(10 * k + u))
        for u in range(n_users)
        for k in range(per_user)
    ]


def _toy_split(with_extras: bool = True) -> Split:
    """A leave-one-out split of ``_toy_rows``; without extras, neither timestamps nor ratings are kept."""
    users, items, ratings, times = zip(*_toy_rows(), strict=True)
    frame = pl.DataFrame({"user": users, "item": items, "timestamp": times, "rating": ratings})
    split = leave_one_out(encode({"all": frame})["all"])
    if with_extras:
        return split
    bare = {name: replace(part, timestamps=None, ratings=None) for name, part in split.parts().items()}
    return Split(**bare)


class _CountingBuild:
    """A build callable that records how often the cache asked for a fresh split."""

    def __init__(self, split: Split) -> None:
        self.split = split
        self.calls = 0

    def __call__(self) -> Split:
        self.calls += 1
        return self.split


def _assert_same_split(left: Split, right: Split) -> None:
    for name, part in left.parts().items():
        other = right.parts()[name]
        assert (part.n_users, part.n_items) == (other.n_users, other.n_items)
        assert part.user_ids.to_list() == other.user_ids.to_list()
        assert part.item_ids.to_list() == other.item_ids.to_list()
        for column in ("users", "items", "timestamps", "ratings"):
            mine, theirs = getattr(part, column), getattr(other, column)
            if mine is None or theirs is None:
                assert mine is None and theirs is None, column
            else:
                assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), (name, column)


# --- cached_split --------------------------------------------------------------------------------


@pytest.mark.parametrize("with_extras", [True, False], ids=["timestamps-ratings", "pairs-only"])
def test_cached_split_builds_once_and_reads_back_the_same_arrays(tmp_path: Path, with_extras: bool) -> None:
    directory = tmp_path / "splits" / "toy-0123"
    build = _CountingBuild(_toy_split(with_extras))
    first = cached_split(directory, build)
    second = cached_split(directory, build)
    assert build.calls == 1
    assert first is build.split and second is not build.split  # the second one came from disk
    _assert_same_split(build.split, second)
    assert [p.name for p in directory.parent.iterdir()] == ["toy-0123"]  # no .tmp-* staging left


def test_a_stale_staging_folder_is_not_used(tmp_path: Path) -> None:
    directory = tmp_path / "toy-0123"
    stale = tmp_path / ".tmp-toy-0123-0000"  # a write that was killed halfway
    stale.mkdir()
    (stale / "interactions.parquet").write_bytes(b"half a parquet file")
    build = _CountingBuild(_toy_split())
    cached_split(directory, build)
    assert build.calls == 1
    _assert_same_split(build.split, cached_split(directory, build))


def test_a_writer_that_loses_the_race_keeps_the_stored_entry(tmp_path: Path) -> None:
    """Another process stores the same entry while this one builds: its rename fails, nothing is left."""
    directory = tmp_path / "toy-0123"
    other = _CountingBuild(_toy_split())

    def build_while_another_process_stores() -> Split:
        cached_split(directory, other)  # the other process finishes first
        return other.split

    result = cached_split(directory, build_while_another_process_stores)
    stored_at = (directory / "interactions.parquet").stat().st_mtime_ns
    assert result is other.split and other.calls == 1
    assert [p.name for p in tmp_path.iterdir()] == ["toy-0123"]
    _assert_same_split(other.split, cached_split(directory, other))
    assert (directory / "interactions.parquet").stat().st_mtime_ns == stored_at


def test_a_failed_build_stores_nothing(tmp_path: Path) -> None:
    def build() -> Split:
        raise DataError("broken file")

    with pytest.raises(DataError, match="broken file"):
        cached_split(tmp_path / "toy-0123", build)
    assert list(tmp_path.iterdir()) == []


def test_cache_key_follows_file_bytes_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("user,item\n1,2\n")
    key = cache_key([path], {"seed": 1, "data": {"name": "a"}})
    assert key == cache_key([path], {"data": {"name": "a"}, "seed": 1})  # key order does not matter
    assert key != cache_key([path], {"seed": 2, "data": {"name": "a"}})
    path.write_text("user,item\n1,3\n")
    assert key != cache_key([path], {"seed": 1, "data": {"name": "a"}})


# --- load_split / build_split --------------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root with one dataset ``toy``: ``interactions.csv`` (5 users x 10 ratings, timestamps)."""
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    lines = "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in _toy_rows())
    (folder / "interactions.csv").write_text("user,item,rating,timestamp\n" + lines)
    return tmp_path / "data"


def _config(**changes: Any) -> DataConfig:
    return DataConfig.model_validate({"name": "toy", "format": "csv", "file": "interactions.csv", **changes})


def test_load_split_reuses_the_cache_until_the_file_changes(data_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = _config()
    first = load_split(config, data_root, seed=1, cache_dir=cache)
    (entry,) = (cache / "splits").iterdir()
    assert entry.name.startswith("toy-")
    stored = entry / "interactions.parquet"
    written_at = stored.stat().st_mtime_ns

    second = load_split(config, data_root, seed=1, cache_dir=cache)
    _assert_same_split(first, second)
    _assert_same_split(first, build_split(config, dataset_files(config, data_root), 1))
    assert stored.stat().st_mtime_ns == written_at  # read, not rebuilt
    assert list((cache / "splits").iterdir()) == [entry]

    with (data_root / "toy" / "interactions.csv").open("a") as handle:
        handle.write("104,1020,5,99\n")  # a new item
    changed = load_split(config, data_root, seed=1, cache_dir=cache)
    assert len(list((cache / "splits").iterdir())) == 2
    assert len(changed.train) + len(changed.valid) + len(changed.test) == 51


def test_split_seed_overrides_the_experiment_seed(data_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_split(_config(), data_root, seed=1, cache_dir=cache)
    load_split(_config(), data_root, seed=2, cache_dir=cache)
    assert len(list((cache / "splits").iterdir())) == 2
    pinned = _config(split={"seed": 5})
    one = load_split(pinned, data_root, seed=1, cache_dir=cache)
    two = load_split(pinned, data_root, seed=2, cache_dir=cache)
    assert len(list((cache / "splits").iterdir())) == 3
    _assert_same_split(one, two)


def test_dataset_files_errors(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data root .* does not exist"):
        dataset_files(_config(), tmp_path / "nowhere")
    with pytest.raises(DataError, match="dataset folder .*other does not exist"):
        dataset_files(_config(name="other"), data_root)
    with pytest.raises(DataError, match=r"absent\.csv: no such file"):
        dataset_files(_config(file="absent.csv"), data_root)


def test_build_split_with_threshold_and_leave_one_out(data_root: Path) -> None:
    config = _config(rating_threshold=3.0, split={"method": "leave_one_out"})
    split = build_split(config, dataset_files(config, data_root), seed=0)
    kept = [row for row in _toy_rows() if row[2] >= 3.0]
    assert len(split.train) + len(split.valid) + len(split.test) == len(kept)
    assert split.train.ratings.min() >= 3.0
    latest = {u: max(t for uu, _, _, t in kept if uu == u) for u in {row[0] for row in kept}}
    test_times = dict(zip(split.test.user_ids.gather(split.test.users).to_list(), split.test.timestamps))
    assert test_times == latest


def test_build_split_errors_when_filters_leave_nothing(data_root: Path) -> None:
    files = dataset_files(_config(), data_root)
    with pytest.raises(DataError, match="no interactions left after the rating threshold"):
        build_split(_config(rating_threshold=6.0), files, seed=0)
    with pytest.raises(DataError, match="no interactions left after k-core"):
        build_split(_config(min_user_interactions=11), files, seed=0)


def test_given_split_uses_a_valid_file_or_carves_one(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "train.txt").write_text("0 0 1 2 3 4 5 6 7 8 9\n1 1 2\n")
    (folder / "valid.txt").write_text("0 10\n")
    (folder / "test.txt").write_text("0 11\n2 1\n")  # user 2 appears only in test
    base = {"name": "pairs", "format": "lightgcn", "train_file": "train.txt", "test_file": "test.txt"}
    carved_config = DataConfig.model_validate({**base, "split": {"method": "given"}})
    carved = build_split(carved_config, dataset_files(carved_config, tmp_path), seed=0)
    assert (carved.n_users, carved.n_items) == (3, 11)  # items 0-9 and 11
    assert carved.valid.user_counts().tolist() == [1, 1, 0]  # 10 -> 1; 2 -> 1 (RecBole's bump)
    assert len(carved.train) == 12 - 2
    assert carved.test.user_ids.gather(carved.test.users).to_list() == [0, 2]

    given_config = DataConfig.model_validate(
        {**base, "valid_file": "valid.txt", "split": {"method": "given"}}
    )
    given = build_split(given_config, dataset_files(given_config, tmp_path), seed=0)
    assert (given.n_items, len(given.train), len(given.valid), len(given.test)) == (12, 12, 1, 2)
    assert given.valid.item_ids.gather(given.valid.items).to_list() == [10]


# --- config and manifest -------------------------------------------------------------------------


def test_manifest_defaults_merge_under_the_section() -> None:
    assert {"ml-100k", "gowalla", "yelp2018", "ml-1m"} <= set(known_datasets())
    merged = with_manifest_defaults({"name": "ml-100k", "columns": {"rating": None}})
    config = DataConfig.model_validate(merged)
    assert config.format == "recbole" and config.file == "ml-100k.inter"
    assert (config.columns.user, config.columns.rating) == ("user_id", None)  # nested keys merge
    gowalla = DataConfig.model_validate(with_manifest_defaults({"name": "gowalla", "split": {"seed": 3}}))
    assert (gowalla.split.method, gowalla.split.seed, gowalla.train_file) == ("given", 3, "train.txt")
    unlisted = {"name": "unlisted", "format": "csv"}
    assert with_manifest_defaults(unlisted) == unlisted


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fiel": "x.csv"}, "fiel\n  Extra inputs are not permitted"),
        ({"split": {"method": "given"}}, "needs train_file and test_file"),
        ({"split": {"ratios": (0.0, 0.5, 0.5)}}, "positive train share"),
        ({"train_file": "t.txt"}, "only for split.method 'given'"),
    ],
)
def test_data_config_rejects_bad_sections(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _config(**changes)


def test_given_split_refuses_k_core() -> None:
    with pytest.raises(ValidationError, match="k-core filtering would change a given split"):
        DataConfig.model_validate(
            {
                "name": "g",
                "format": "lightgcn",
                "train_file": "a",
                "test_file": "b",
                "min_user_interactions": 5,
                "split": {"method": "given"},
            }
        )
