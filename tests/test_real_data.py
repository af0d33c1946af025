"""Real datasets from ../shared/data through the manifest: counts that the sources publish."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.data.config import DataConfig, with_manifest_defaults
from recsys.data.interactions import Split
from recsys.data.loading import build_split, dataset_files
from recsys.data.splits import ratio_counts

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _split(name: str, seed: int = 2020) -> Split:
    if not (DATA_ROOT / name).is_dir():
        pytest.skip(f"real dataset {name!r} not found under {DATA_ROOT} (see shared/data/README.md)")
    config = DataConfig.model_validate(with_manifest_defaults({"name": name}))
    return build_split(config, dataset_files(config, DATA_ROOT), seed)


def test_ml_100k_random_split_matches_recbole_counts() -> None:
    split = _split("ml-100k")
    assert (split.n_users, split.n_items) == (943, 1682)
    totals = split.train.user_counts() + split.valid.user_counts() + split.test.user_counts()
    assert totals.sum() == 100_000 and totals.min() >= 20
    # Every user has >= 20 ratings, so 0.1 * n >= 2 and RecBole's floor needs no bump.
    assert (split.valid.user_counts() == totals // 10).all()
    assert (split.test.user_counts() == totals // 10).all()
    assert split.train.timestamps is not None and split.train.ratings is not None


@pytest.mark.parametrize(
    ("name", "n_users", "n_items", "train_and_valid", "test"),
    [
        ("gowalla", 29_858, 40_981, 810_128, 217_242),
        ("ml-1m", 6_022, 3_043, 796_244, 99_455),  # CRLF line endings
        pytest.param("yelp2018", 31_668, 38_048, 1_237_259, 324_147, marks=pytest.mark.slow),
    ],
)
def test_given_lightgcn_splits_keep_their_published_counts(
    name: str, n_users: int, n_items: int, train_and_valid: int, test: int
) -> None:
    split = _split(name)
    assert (split.n_users, split.n_items) == (n_users, n_items)
    assert len(split.test) == test
    assert len(split.train) + len(split.valid) == train_and_valid
    # valid_ratio 0.1 of each user's given train, counted as RecBole would.
    given_train = split.train.user_counts() + split.valid.user_counts()
    assert (split.valid.user_counts() == ratio_counts(given_train, (0.9, 0.1))[:, 1]).all()
