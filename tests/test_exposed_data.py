"""Randomly-exposed test sets as data: Coat's dense matrices, the `exposed_test` split, its cache, and the
real Yahoo! R3 and Coat files in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.config import resolve_config
from recsys.data.config import DataConfig, with_manifest_defaults
from recsys.data.loading import load_split
from recsys.data.readers import read_interactions
from recsys.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_dense_matrix_reads_nonzero_cells_as_ratings(tmp_path: Path) -> None:
    path = tmp_path / "m.ascii"
    path.write_text("0 3 0\n5 0 1\n\n0 0 4\n")
    frame = read_interactions(path, "dense")
    assert frame.sort("user", "item").rows() == [(0, 1, 3.0), (1, 0, 5.0), (1, 2, 1.0), (2, 2, 4.0)]  # blank lines are not rows


@pytest.mark.parametrize(("text", "message"), [
    ("0 1\n1 0 2\n", r"m.ascii:2: 3 columns, but the first row has 2"),
    ("0 1\n1 x\n", r"m.ascii:2: rating 'x' is not a number"),
    ("0 -1\n", r"m.ascii:1: ratings must be non-negative"),
    ("\n\n", r"m.ascii: no interactions"),
])
def test_dense_matrix_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.ascii"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_interactions(path, "dense")


def _exposed_dataset(root: Path) -> DataConfig:
    folder = root / "toy"
    folder.mkdir(parents=True)
    # Train ratings: users 0..3; only ratings >= 4 are positives.
    (folder / "train.csv").write_text("0,0,5\n0,1,2\n0,2,4\n1,1,5\n1,2,1\n2,0,4\n2,3,5\n3,3,4\n3,1,5\n3,0,4\n")
    # Randomly exposed test: every row is kept; ratings >= 4 are relevant.
    (folder / "test.csv").write_text("0,3,5\n0,1,1\n1,0,2\n1,3,3\n2,1,4\n2,2,5\n3,2,1\n")
    return DataConfig.model_validate({
        "name": "toy", "format": "csv", "has_header": False,
        "columns": {"user": "0", "item": "1", "rating": "2", "timestamp": None},
        "train_file": "train.csv", "test_file": "test.csv", "rating_threshold": 4, "exposed_test": True,
        "split": {"method": "given", "valid_ratio": 0.3},
    })


def test_exposed_split_keeps_every_exposed_pair_and_tests_the_relevant_ones(tmp_path: Path) -> None:
    config = _exposed_dataset(tmp_path / "data")
    split = load_split(config, tmp_path / "data", seed=1, cache_dir=tmp_path / "cache")
    original = lambda part: set(zip(part.user_ids.gather(part.users).to_list(), part.item_ids.gather(part.items).to_list(), strict=True))  # noqa: E731
    assert split.exposure is not None
    assert original(split.exposure) == {(0, 3), (0, 1), (1, 0), (1, 3), (2, 1), (2, 2), (3, 2)}
    assert sorted(split.exposure.ratings.tolist()) == [1, 1, 2, 3, 4, 5, 5]
    assert original(split.test) == {(0, 3), (2, 1), (2, 2)}
    positives = original(split.train) | original(split.valid)
    assert positives == {(0, 0), (0, 2), (1, 1), (2, 0), (2, 3), (3, 3), (3, 1), (3, 0)}
    # The cache gives back the same split, exposure included.
    again = load_split(config, tmp_path / "data", seed=1, cache_dir=tmp_path / "cache")
    assert again.exposure is not None and original(again.exposure) == original(split.exposure)
    np.testing.assert_array_equal(again.exposure.ratings, split.exposure.ratings)
    assert original(again.test) == original(split.test)


def test_exposed_test_needs_a_given_split_and_a_threshold() -> None:
    with pytest.raises(ValueError, match="exposed_test needs"):
        DataConfig.model_validate({"name": "x", "format": "csv", "file": "a.csv", "exposed_test": True})
    with pytest.raises(ValueError, match="exposed_test needs"):
        DataConfig.model_validate({"name": "x", "format": "csv", "train_file": "a", "test_file": "b",
                                   "exposed_test": True, "split": {"method": "given"}})


def test_the_exposed_protocol_needs_exposed_data() -> None:
    raw = {"data": {"name": "sample"}, "model": {"name": "mf"}, "eval": {"protocol": "exposed"}}
    with pytest.raises(ConfigError, match="eval.protocol: 'exposed' needs"):
        resolve_config(raw)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the repository")
@pytest.mark.parametrize(("name", "users", "exposed", "relevant"), [
    ("yahoo-r3", 5400, 54_000, 1378 + 3371),
    ("coat", 290, 4640, 641 + 219),
])
def test_real_exposed_test_sets(tmp_path: Path, name: str, users: int, exposed: int, relevant: int) -> None:
    """The counts of SOURCE.md: every random rating is exposed, ratings 4 and 5 are relevant."""
    config = DataConfig.model_validate(with_manifest_defaults({"name": name}))
    split = load_split(config, SHARED, seed=2020, cache_dir=tmp_path)
    assert split.exposure is not None
    assert len(split.exposure) == exposed
    assert np.count_nonzero(split.exposure.user_counts()) == users
    assert len(split.test) == relevant
    assert (split.test.ratings >= 4).all()
    # Train and validation hold the MNAR positives only (rated >= 4), about 10% of them validation.
    assert len(split.valid) / (len(split.train) + len(split.valid)) == pytest.approx(0.1, abs=0.05)  # per-user rounding
