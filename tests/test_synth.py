"""The semi-synthetic MNAR generator (`recsys data synth`): the generative story it promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.cli import main
from recsys.data.config import DataConfig
from recsys.data.loading import load_split
from recsys.data.synth import SynthConfig, generate, top_relevant

SMALL = dict(n_users=300, n_items=200, test_per_user=20, clicks_per_user=15.0)


def test_same_config_same_data_and_the_promised_rates() -> None:
    config = SynthConfig(**SMALL, eta=1.0, seed=4)
    first, second = generate(config), generate(config)
    assert first.train.equals(second.train) and first.test.equals(second.test)
    assert first.relevance.mean() == pytest.approx(0.1, abs=1e-6)
    assert float(first.exposure.max()) <= 1.0
    # Each user sees test_per_user distinct random items; labels are 0/1 draws of the true relevance.
    per_user = first.test.group_by("user").agg(n=pl.len(), distinct=pl.col("item").n_unique())
    assert (per_user["n"] == 20).all() and (per_user["distinct"] == 20).all()
    assert set(first.test["rating"].unique().to_list()) <= {0.0, 1.0}
    relevant_rate = first.test["rating"].mean()
    assert relevant_rate == pytest.approx(first.relevance.mean(), abs=0.02)


def test_eta_zero_exposes_every_item_alike_and_eta_one_follows_popularity() -> None:
    flat = generate(SynthConfig(**SMALL, eta=0.0, seed=1))
    assert np.ptp(flat.exposure) == pytest.approx(0.0)
    assert len(flat.train) / SMALL["n_users"] == pytest.approx(15.0, rel=0.05)  # the expected clicks
    biased = generate(SynthConfig(**SMALL, eta=1.0, seed=1))
    counts = np.bincount(biased.train["item"].to_numpy(), minlength=200)
    order = np.argsort(-biased.exposure[0])
    top, bottom = order[:20], order[100:]  # the 10% most exposed items, the less exposed half
    assert counts[top].mean() > 3 * counts[bottom].mean()
    # Relevance does not depend on popularity: the most exposed items are not more relevant.
    assert abs(biased.relevance[:, top].mean() - biased.relevance.mean()) < 0.03


def test_top_labels_are_each_users_top_fraction_of_true_relevance() -> None:
    drawn = generate(SynthConfig(**SMALL, eta=1.0, seed=2))
    top = generate(SynthConfig(**SMALL, eta=1.0, seed=2, test_labels="top"))
    # Only the test labels change: the same clicks, the same test items.
    assert top.train.equals(drawn.train) and top.test.select("user", "item").equals(drawn.test.select("user", "item"))
    # relevance_rate 0.1 of 200 items: a test item is relevant iff its gamma is among the user's 20 highest.
    twentieth = np.sort(top.relevance, axis=1)[:, -20]
    users, items = top.test["user"].to_numpy(), top.test["item"].to_numpy()
    expected = top.relevance[users, items] >= twentieth[users]
    np.testing.assert_array_equal(top.test["rating"].to_numpy(), expected.astype(np.float64))
    assert top_relevant(top.relevance, 0.1).sum(axis=1).tolist() == [20] * SMALL["n_users"]
    assert top_relevant(np.array([[0.1, 0.9, 0.5]]), 0.01).tolist() == [[False, True, False]]  # at least one


def test_cli_writes_a_dataset_the_exposed_split_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "synth", "toy", "--data-root", str(tmp_path), "--users", "50", "--items", "40",
                 "--test-per-user", "10", "--clicks-per-user", "8", "--seed", "3", "--test-labels", "top"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == [
        "SOURCE.md", "propensity.npy", "relevance.npy", "test.csv", "train.csv"]
    # propensity.npy is the true item exposure theta, the one the clicks were drawn with.
    data = generate(SynthConfig(n_users=50, n_items=40, test_per_user=10, clicks_per_user=8.0, seed=3, test_labels="top"))
    np.testing.assert_allclose(np.load(tmp_path / "toy" / "propensity.npy"), data.exposure[0])
    assert (data.exposure == data.exposure[0]).all()
    assert "test_labels: top" in (tmp_path / "toy" / "SOURCE.md").read_text()
    config = DataConfig.model_validate({
        "name": "toy", "format": "csv", "has_header": False,
        "columns": {"user": "0", "item": "1", "rating": "2", "timestamp": None},
        "train_file": "train.csv", "test_file": "test.csv", "rating_threshold": 1, "exposed_test": True,
        "split": {"method": "given"},
    })
    split = load_split(config, tmp_path, seed=0, cache_dir=tmp_path / "cache")
    assert split.exposure is not None and len(split.exposure) == 500
    # An existing folder is kept unless --force; bad settings are one-line errors.
    assert main(["data", "synth", "toy", "--data-root", str(tmp_path)]) == 2
    assert "exists (pass --force" in capsys.readouterr().err
    assert main(["data", "synth", "other", "--data-root", str(tmp_path), "--test-per-user", "0"]) == 2
    assert not (tmp_path / "other").exists()
    assert main(["data", "synth", "toy", "--data-root", str(tmp_path), "--users", "60", "--items", "40", "--test-per-user", "10", "--force"]) == 0
