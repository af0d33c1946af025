"""The noise-model samplers: NBPO's learnable flip model and Rel-MF's inverse-propensity weights."""

from __future__ import annotations

import math
from dataclasses import replace

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from factories import rows_interactions

from recsys.config import load_config
from recsys.data.interactions import Interactions
from recsys.errors import DataError
from recsys.experiment import _inverse_propensity
from recsys.interfaces import Negatives
from recsys.losses import nbpo_loss, relmf_loss
from recsys.samplers import SAMPLERS
from recsys.samplers.mnar import MNARConfig, MNARSampler, item_propensity
from recsys.samplers.noisy_label_robust import (
    NoisyLabelRobustConfig,
    NoisyLabelRobustSampler,
)
from recsys.samplers.uniform import UniformSampler


def _no_scores(items: torch.Tensor) -> torch.Tensor:
    return torch.zeros(items.shape)


# --- NBPO: the flip model --------------------------------------------------------------------------


def test_flip_model_starts_as_in_the_official_code() -> None:
    # P ~ 5 U[0,1) / sqrt(r) >= 0, Q ~ -5 U[0,1) / sqrt(r) <= 0: E[P_u . Q_i] = -r (2.5 / sqrt r)^2 = -6.25.
    sampler = NoisyLabelRobustSampler(UniformSampler(300, 4), n_users=200, rank=50, flip_l2=0.01, seed=0)
    scale = 5 / math.sqrt(50)
    users, items = sampler.user_flip.weight.detach(), sampler.item_flip.weight.detach()
    assert users.shape == (200, 50) and items.shape == (300, 50)
    assert bool(((users >= 0) & (users < scale)).all())
    assert bool(((items <= 0) & (items > -scale)).all())
    logits = users @ items.T  # [200, 300]
    assert logits.mean().item() == pytest.approx(-6.25, abs=0.2)
    assert logits.max().item() <= 0  # every flip probability starts at most 1/2 ...
    assert torch.sigmoid(logits).mean().item() < 0.01  # ... and on average near sigmoid(-6.25) = 0.0019
    again = NoisyLabelRobustSampler(UniformSampler(300, 4), n_users=200, rank=50, flip_l2=0.01, seed=0)
    assert torch.equal(again.user_flip.weight, sampler.user_flip.weight)


def test_extras_are_the_flip_logits_and_l2_of_the_batch() -> None:
    train = rows_interactions([[0, 1], [2], [3, 4, 5]], n_items=12)
    config = NoisyLabelRobustConfig(n_negatives=3, rank=4, flip_l2=0.1)
    sampler = SAMPLERS.build(config, train, 11)
    assert isinstance(sampler, NoisyLabelRobustSampler)
    queries, positives = torch.tensor([0, 2, 1, 2]), torch.tensor([1, 5, 2, 3])
    negatives = sampler(queries, positives, _no_scores)
    # Uniform negatives that exclude training positives, drawn by the inner sampler (seed + 1).
    twin = UniformSampler(12, 3, train.csr(), seed=12)(queries, positives, _no_scores)
    assert torch.equal(negatives.items, twin.items)
    torch.testing.assert_close(negatives.log_q, twin.log_q)
    P, Q = sampler.user_flip.weight.detach(), sampler.item_flip.weight.detach()
    extras = negatives.extras
    assert set(extras) == {"flip_logit_positive", "flip_logit_negative", "flip_l2"}
    torch.testing.assert_close(extras["flip_logit_positive"].detach(), (P[queries] * Q[positives]).sum(1))
    expected_negative = torch.stack(
        [torch.stack([P[u] @ Q[j] for j in row]) for u, row in zip(queries.tolist(), negatives.items.tolist())]
    )
    assert extras["flip_logit_negative"].shape == (4, 3)
    torch.testing.assert_close(extras["flip_logit_negative"].detach(), expected_negative)
    squares = [
        P[u].pow(2).sum() + Q[i].pow(2).sum() + sum(Q[j].pow(2).sum() for j in row)
        for u, i, row in zip(queries.tolist(), positives.tolist(), negatives.items.tolist())
    ]
    torch.testing.assert_close(extras["flip_l2"].detach(), 0.5 * 0.1 * torch.stack(squares).mean())


def test_nbpo_loss_trains_the_flip_embeddings_of_the_batch_only() -> None:
    train = rows_interactions([[0, 1], [2], [3, 4, 5], [6]], n_items=20)
    sampler = SAMPLERS.build(NoisyLabelRobustConfig(n_negatives=2, rank=3), train, 0)
    queries, positives = torch.tensor([0, 2]), torch.tensor([1, 4])
    negatives = sampler(queries, positives, _no_scores)
    pos_scores = torch.tensor([1.0, -0.5])
    neg_scores = torch.tensor([[2.0, 0.0], [0.5, 3.0]])
    nbpo_loss(pos_scores, neg_scores, negatives).backward()
    user_grad = sampler.user_flip.weight.grad
    item_grad = sampler.item_flip.weight.grad
    touched_users = {0, 2}
    touched_items = {1, 4} | set(negatives.items.flatten().tolist())
    for user in range(4):
        assert bool((user_grad[user] != 0).any()) == (user in touched_users), f"user {user}"
    for item in range(20):
        assert bool((item_grad[item] != 0).any()) == (item in touched_items), f"item {item}"


def test_a_training_step_on_the_flip_model_raises_eps_of_a_well_scored_negative() -> None:
    # An unvoted item the recommender scores highly is likely a hidden positive: one gradient step
    # on the nbpo loss raises its flip probability.
    train = rows_interactions([[0], [1]], n_items=6)
    sampler = SAMPLERS.build(NoisyLabelRobustConfig(n_negatives=1, rank=4, flip_l2=0.0), train, 3)
    queries, positives = torch.tensor([0]), torch.tensor([0])
    negatives = sampler(queries, positives, _no_scores)
    before = negatives.extras["flip_logit_negative"].item()
    nbpo_loss(torch.tensor([0.0]), torch.tensor([[8.0]]), negatives).backward()
    with torch.no_grad():
        for parameter in sampler.parameters():
            parameter -= 0.5 * parameter.grad
    user, item = queries[0], negatives.items[0, 0]
    assert (sampler.user_flip.weight[user] @ sampler.item_flip.weight[item]).item() > before


def test_flip_probability_diagnostic_counts_training_draws_only() -> None:
    sampler = NoisyLabelRobustSampler(UniformSampler(30, 5, seed=1), n_users=4, rank=6, flip_l2=0.0, seed=2)
    assert sampler.diagnostics() == {}  # nothing drawn yet
    first = sampler(torch.tensor([0, 1]), torch.tensor([2, 3]), _no_scores)
    second = sampler(torch.tensor([3]), torch.tensor([4]), _no_scores)
    sampler.eval()
    sampler(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 0, 0]), _no_scores)  # the probe's draws
    sampler.train()
    eps = torch.sigmoid(
        torch.cat([first.extras["flip_logit_negative"].flatten(), second.extras["flip_logit_negative"].flatten()])
    )
    figures = sampler.diagnostics()
    assert figures["flip_probability"] == pytest.approx(eps.mean().item(), rel=1e-6)  # 15 negatives
    assert sampler.diagnostics() == {}  # read once per epoch: the totals start again


def test_nbpo_config_defaults() -> None:
    config = NoisyLabelRobustConfig()
    assert (config.n_negatives, config.rank, config.flip_l2, config.exclude_positives) == (4, 50, 0.01, True)


# --- MNAR: inverse propensity ----------------------------------------------------------------------


def test_item_propensity_by_hand() -> None:
    # counts [1, 4, 16, 0, 9], max 16: (n / 16)^0.5 = [0.25, 0.5, 1, 0, 0.75], clipped at 0.3.
    counts = np.array([1, 4, 16, 0, 9])
    np.testing.assert_allclose(item_propensity(counts, eta=0.5, clip=0.3), [0.3, 0.5, 1.0, 0.3, 0.75])
    # eta 1: n / 16 = [0.0625, 0.25, 1, 0, 0.5625], clipped at 0.1.
    np.testing.assert_allclose(item_propensity(counts, eta=1.0, clip=0.1), [0.1, 0.25, 1.0, 0.1, 0.5625])
    # eta 0: no popularity correction at all.
    np.testing.assert_allclose(item_propensity(counts, eta=0.0, clip=0.1), np.ones(5))
    np.testing.assert_allclose(item_propensity(np.zeros(3, dtype=np.int64), eta=0.5, clip=0.2), [0.2] * 3)


def _popularity_train() -> Interactions:
    """16 users; item counts [1, 4, 16, 0, 9] (no user has every item)."""
    rows = [[2] for _ in range(16)]
    rows[0].append(0)
    for user in range(4):
        rows[user].append(1)
    for user in range(9):
        rows[user].append(4)
    return rows_interactions([sorted(row) for row in rows], n_items=5)


def test_mnar_positive_weights_are_inverse_clipped_propensities() -> None:
    train = _popularity_train()
    assert train.item_counts().tolist() == [1, 4, 16, 0, 9]
    sampler = SAMPLERS.build(MNARConfig(n_negatives=2, eta=0.5, clip=0.3, unlabeled_weight=1.0), train, 0)
    assert isinstance(sampler, MNARSampler)
    queries = torch.tensor([0, 0, 5, 3, 0, 15])
    positives = torch.tensor([0, 1, 2, 3, 4, 2])
    negatives = sampler(queries, positives, _no_scores)
    # theta = [0.3, 0.5, 1, 0.3, 0.75] -> 1 / theta = [3.3333333, 2, 1, 3.3333333, 1.3333333]
    torch.testing.assert_close(negatives.pos_weight, torch.tensor([10 / 3, 2.0, 1.0, 10 / 3, 4 / 3, 1.0]))
    assert not negatives.unit_weights
    assert bool((negatives.weight == 1).all()) and negatives.items.shape == (6, 2)
    # Unlabeled pairs are the pairs without a training positive.
    dense = torch.from_numpy(train.csr().toarray() > 0)
    assert not bool(dense[queries.unsqueeze(1), negatives.items].any())
    figures = sampler.diagnostics()
    assert figures["max_inverse_propensity"] == pytest.approx(10 / 3, rel=1e-6)
    assert figures["mean_inverse_propensity"] == pytest.approx((10 / 3 + 2 + 1 + 10 / 3 + 4 / 3) / 5, rel=1e-6)


def test_flattened_propensity_keeps_the_mean_positive_weight_for_every_item() -> None:
    # counts [1, 4, 16, 0, 9], 1 / theta = [10/3, 2, 1, 10/3, 4/3] (eta 0.5, clip 0.3): the mean weight over
    # the 30 positives is (10/3 + 8 + 16 + 12) / 30 = 1.3111111, now every item's.
    config = MNARConfig(n_negatives=2, eta=0.5, clip=0.3, flatten=True)
    sampler = SAMPLERS.build(config, _popularity_train(), 0)
    negatives = sampler(torch.tensor([0, 0, 5]), torch.tensor([0, 1, 2]), _no_scores)
    torch.testing.assert_close(negatives.pos_weight, torch.full((3,), (10 / 3 + 8 + 16 + 12) / 30))


def test_mnar_weights_reach_the_relmf_loss() -> None:
    # Positives 0 (weight 10/3) and 2 (weight 1) scored 0; negatives scored 0 with weight 1:
    # every delta is log 2, so L = [ (10/3 + (1 - 10/3)) + (1 + 0) + 2 * 2 ] log 2 / (2 * 3) = 6 log 2 / 6.
    sampler = SAMPLERS.build(MNARConfig(n_negatives=2, eta=0.5, clip=0.3, unlabeled_weight=1.0), _popularity_train(), 0)
    negatives = sampler(torch.tensor([0, 1]), torch.tensor([0, 2]), _no_scores)
    loss = relmf_loss(torch.zeros(2), torch.zeros(2, 2), negatives)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    # With scores the weights matter: a well-scored, rare positive lowers the loss below the plain one.
    weighted = relmf_loss(torch.tensor([3.0, 0.0]), torch.zeros(2, 2), negatives)
    unweighted = sampler.uniform(torch.tensor([0, 1]), torch.tensor([0, 2]), _no_scores)
    plain = relmf_loss(torch.tensor([3.0, 0.0]), torch.zeros(2, 2), unweighted)
    # weighted - plain = (10/3 - 1) * (softplus(-3) - softplus(3)) / 6 = (7/3) * (-3) / 6 = -1.1666667
    assert weighted.item() - plain.item() == pytest.approx(-7 / 6, rel=1e-5)


def test_mnar_unlabeled_pairs_carry_their_inverse_sampling_rate() -> None:
    """With unlabeled_weight None each sampled unlabeled pair stands for |unlabeled| / (N |positives|) pairs,
    so a batch's relmf loss estimates Eq. 9's sum over all pairs (see MNARSampler); by default it is 1."""
    train = _popularity_train()
    unlabeled = train.n_users * train.n_items - len(train)
    assert MNARConfig().unlabeled_weight == 1.0
    sampler = SAMPLERS.build(MNARConfig(n_negatives=2, unlabeled_weight=None), train, 0)
    negatives = sampler(torch.tensor([0, 3]), torch.tensor([2, 4]), _no_scores)
    expected = unlabeled / (2 * len(train))
    torch.testing.assert_close(negatives.weight, torch.full((2, 2), expected))
    assert sampler.diagnostics()["unlabeled_weight"] == pytest.approx(expected)


@pytest.mark.parametrize(("relevance", "exposure"), [(0.3, 0.05), (0.1, 1.0), (0.6, 0.2)])
def test_weighted_relmf_loss_is_minimised_at_the_true_relevance(relevance: float, exposure: float) -> None:
    """The expected relmf loss of one pair, over its click (probability theta gamma, weight 1/theta) and its
    sampling as an unlabeled pair (rate c, weight 1/c), is minimised at sigmoid(x) = gamma; with weight 1
    (the paper code's balanced batches) the minimiser overshoots to the boundary for a rare item."""
    rate = 0.02  # N |positives| / |unlabeled|
    grid = torch.linspace(-6, 6, 2401)
    probability = torch.sigmoid(grid)

    def expected_loss(unlabeled_weight: float) -> torch.Tensor:
        click = Negatives.unweighted(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1))
        click = replace(click, pos_weight=torch.tensor([1 / exposure]), weight=torch.zeros(1, 1), unit_weights=False)
        unlabeled = replace(click, pos_weight=torch.zeros(1), weight=torch.full((1, 1), unlabeled_weight))
        losses = []
        for x in grid:
            # relmf_loss divides by B (1 + N) = 2 pairs: multiply back.
            clicked = 2 * relmf_loss(x.view(1), torch.full((1, 1), -1e4), click, form="square")
            sampled = 2 * relmf_loss(torch.full((1,), 1e4), x.view(1, 1), unlabeled, form="square")
            losses.append(exposure * relevance * clicked + (1 - exposure * relevance) * rate * sampled)
        return torch.stack(losses)

    best = probability[expected_loss(1 / rate).argmin()]
    assert float(best) == pytest.approx(relevance, abs=0.01)
    if exposure < 0.1:
        assert float(probability[expected_loss(1.0).argmin()]) > 0.99


def test_mnar_reads_known_propensities_by_original_item_id(tmp_path: Path) -> None:
    """``propensity_file`` replaces the count estimate: theta is looked up by original item id and clipped."""
    # Internal items 0..4 are the original items [3, 0, 4, 1, 2]; theta by original id 0..5.
    train = replace(_popularity_train(), item_ids=pl.Series([3, 0, 4, 1, 2]))
    path = tmp_path / "propensity.npy"
    np.save(path, np.array([0.5, 0.05, 1.0, 0.25, 0.8, 0.9]))
    sampler = SAMPLERS.build(MNARConfig(clip=0.1, propensity_file=path), train, 0)
    # internal theta = [0.25, 0.5, 0.8, 0.05 -> clip 0.1, 1.0]; eta and the counts play no part.
    negatives = sampler(torch.tensor([0, 0, 0, 0, 0]), torch.tensor([0, 1, 2, 3, 4]), _no_scores)
    torch.testing.assert_close(negatives.pos_weight, torch.tensor([4.0, 2.0, 1.25, 10.0, 1.0]))
    # The evaluator's IPS weights read the same file, with their own clip.
    config = load_config(Path("configs/synth/mf_bce.yaml"), [f"eval.propensity_file={path}", "eval.propensity_clip=0.2"])
    torch.testing.assert_close(_inverse_propensity(config, train), torch.tensor([4.0, 2.0, 1.25, 5.0, 1.0], dtype=torch.float64))
    with pytest.raises(DataError, match="not a vector over the item ids"):
        np.save(path, np.ones(4))
        SAMPLERS.build(MNARConfig(propensity_file=path), train, 0)
    with pytest.raises(DataError, match="does not exist"):
        SAMPLERS.build(MNARConfig(propensity_file=tmp_path / "missing.npy"), train, 0)
