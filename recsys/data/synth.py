"""Semi-synthetic missing-not-at-random clicks with known relevance (``recsys data synth``).

The generative story of Rel-MF (Saito et al., WSDM 2020, Sec. 3): a click is exposure times relevance,
``Y_ui = O_ui R_ui`` with ``O_ui ~ Bernoulli(theta_ui)`` and ``R_ui ~ Bernoulli(gamma_ui)``.

- Relevance ``gamma_ui = sigmoid(x_u . y_i + b)`` from a rank-``dim`` latent-factor model (factors
  ``N(0, 1 / sqrt(dim))`` scaled so the logits have standard deviation ``logit_scale``), with the bias
  ``b`` set so the mean relevance is ``relevance_rate``.
- Exposure ``theta_ui = c (p_i / max_j p_j)^eta`` with a power-law item popularity ``p_i = rank_i^-1``
  over a random order of the items, independent of relevance; ``c`` makes the expected number of
  clicks per user ``clicks_per_user`` (capped so that ``theta <= 1``). ``eta = 0`` exposes every item
  alike (clicks are then unbiased up to scale); ``eta = 1`` is strong popularity bias.
- Train: the clicks. Test: ``test_per_user`` items per user drawn uniformly at random (a randomly
  exposed test set, as Yahoo! R3's). ``test_labels: draw`` labels each with a fresh relevance draw
  ``R_ui ~ Bernoulli(gamma_ui)`` (what a randomly exposed user would click); ``test_labels: top`` labels
  it relevant when ``gamma_ui`` is among the user's ``round(relevance_rate * n_items)`` highest, the
  noise-free truth with the same expected number of relevant items, so that the exposed protocol's
  NDCG measures how well a model ranks ``gamma`` itself.
- ``propensity.npy`` holds each item's true exposure ``theta_i`` (the ``mnar`` sampler can read it with
  ``sampler.propensity_file``, to separate the correction from the estimate of the propensities).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from recsys.errors import DataError

__all__ = ["SynthConfig", "SynthData", "generate", "top_relevant", "write_dataset"]


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and biases of a semi-synthetic dataset (see the module docstring)."""

    n_users: int = 2000
    n_items: int = 1000
    dim: int = 8
    logit_scale: float = 2.0
    relevance_rate: float = 0.1
    eta: float = 1.0
    clicks_per_user: float = 30.0
    test_per_user: int = 50
    test_labels: Literal["draw", "top"] = "draw"
    seed: int = 0

    def check(self) -> None:
        """Raise ``DataError`` (a user's mistake) on impossible settings."""
        if self.n_users < 2 or self.n_items < 2 or self.dim < 1:
            raise DataError("synth: --users and --items must be >= 2 and --dim >= 1")
        if not 0 < self.relevance_rate < 1:
            raise DataError("synth: --relevance-rate must lie in (0, 1)")
        if self.eta < 0 or self.clicks_per_user <= 0 or self.logit_scale <= 0:
            raise DataError("synth: --eta must be >= 0, --clicks-per-user and --logit-scale > 0")
        if not 1 <= self.test_per_user <= self.n_items:
            raise DataError(f"synth: --test-per-user must lie in [1, {self.n_items}]")
        if self.test_labels not in ("draw", "top"):
            raise DataError("synth: --test-labels must be draw or top")


@dataclass(frozen=True)
class SynthData:
    """A generated dataset: true relevance and exposure, train clicks and the random test."""

    relevance: np.ndarray  # [n_users, n_items] gamma
    exposure: np.ndarray  # [n_users, n_items] theta
    train: pl.DataFrame  # user, item, rating (1: a click)
    test: pl.DataFrame  # user, item, rating (1: relevant, 0: not), test_per_user rows per user

    @property
    def item_exposure(self) -> np.ndarray:
        """``[n_items]`` the true propensity ``theta_i`` (exposure depends on the item only)."""
        return self.exposure[0]


def generate(config: SynthConfig) -> SynthData:
    """Draw a dataset; the same config gives the same data."""
    config.check()
    rng = np.random.default_rng(config.seed)
    users = rng.normal(size=(config.n_users, config.dim))
    items = rng.normal(size=(config.n_items, config.dim))
    logits = users @ items.T
    logits *= config.logit_scale / logits.std()
    relevance = _sigmoid(logits + _bias_for_mean(logits, config.relevance_rate))

    popularity = np.empty(config.n_items)
    popularity[rng.permutation(config.n_items)] = 1.0 / np.arange(1, config.n_items + 1)
    shape = np.broadcast_to(np.power(popularity / popularity.max(), config.eta), logits.shape)
    # Scale exposure so that expected clicks per user match; theta <= 1 caps it.
    scale = config.clicks_per_user * config.n_users / float((shape * relevance).sum())
    exposure = np.minimum(scale * shape, 1.0)

    clicked = rng.random(logits.shape) < exposure * relevance
    click_users, click_items = np.nonzero(clicked)
    train = pl.DataFrame({"user": click_users, "item": click_items, "rating": np.ones(len(click_users))})

    # Randomly exposed test: test_per_user distinct items per user (argsort of random keys).
    shown = np.argsort(rng.random(logits.shape), axis=1)[:, : config.test_per_user]
    test_users = np.repeat(np.arange(config.n_users), config.test_per_user)
    test_items = shown.reshape(-1)
    relevant = rng.random(len(test_items)) < relevance[test_users, test_items]  # drawn in both modes: same data
    if config.test_labels == "top":
        relevant = top_relevant(relevance, config.relevance_rate)[test_users, test_items]
    test = pl.DataFrame({"user": test_users, "item": test_items, "rating": relevant.astype(np.float64)})
    return SynthData(relevance=relevance, exposure=exposure, train=train, test=test)


def top_relevant(relevance: np.ndarray, rate: float) -> np.ndarray:
    """``[n_users, n_items]`` bool: each user's ``max(1, round(rate * n_items))`` items of highest relevance."""
    count = max(1, round(rate * relevance.shape[1]))
    kth_highest = -np.partition(-relevance, count - 1, axis=1)[:, count - 1 : count]  # [n_users, 1]
    return relevance >= kth_highest


def write_dataset(config: SynthConfig, folder: Path, force: bool = False) -> SynthData:
    """Generate and write ``folder/{train.csv, test.csv, relevance.npy, propensity.npy, SOURCE.md}`` atomically.

    Raises:
        DataError: ``folder`` exists (unless ``force``).
    """
    if folder.exists() and not force:
        raise DataError(f"{folder} exists (pass --force to replace it)")
    data = generate(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex}"
    try:
        staging.mkdir()
        data.train.write_csv(staging / "train.csv", include_header=False)
        data.test.write_csv(staging / "test.csv", include_header=False)
        np.save(staging / "relevance.npy", data.relevance.astype(np.float32))
        np.save(staging / "propensity.npy", data.item_exposure)
        (staging / "SOURCE.md").write_text(_source_text(config, data))
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data


def _source_text(config: SynthConfig, data: SynthData) -> str:
    settings = "\n".join(f"- {name}: {value}" for name, value in asdict(config).items())
    labels = ("label 1 = relevant, a fresh draw of the true relevance" if config.test_labels == "draw" else
              f"label 1 = gamma among the user's {max(1, round(config.relevance_rate * config.n_items))} highest")
    theta = data.item_exposure
    counts = np.bincount(data.train["item"].to_numpy(), minlength=config.n_items)
    return (
        "# Semi-synthetic MNAR clicks (recsys data synth)\n\n"
        "Generated by `recsys.data.synth` (clicks = exposure x relevance; see its docstring).\n\n"
        f"{settings}\n\n"
        "Files (comma-separated, no header): `train.csv` user,item,1 per click; `test.csv` user,item,label for "
        f"{config.test_per_user} uniformly random items per user ({labels}); `relevance.npy` the true "
        "relevance matrix gamma [users, items]; `propensity.npy` the true exposure theta of each item [items].\n\n"
        f"Counts: {data.train.height:,} clicks, mean relevance {data.relevance.mean():.4f}, "
        f"{int(data.test['rating'].sum()):,} relevant of {data.test.height:,} test pairs; "
        f"theta from {theta.min():.4f} to {theta.max():.4f} ({int((theta >= 1).sum())} items capped at 1); "
        f"clicks per item from {counts.min()} to {counts.max()} (median {np.median(counts):g}).\n"
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _bias_for_mean(logits: np.ndarray, target: float) -> float:
    """The ``b`` with ``mean(sigmoid(logits + b)) = target`` (bisection: the mean is increasing in b)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        middle = (low + high) / 2
        if _sigmoid(logits + middle).mean() < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2
