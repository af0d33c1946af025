"""Sampler sections inside sampler sections (a wrapper's base, a mixture's parts), and paired losses."""

from __future__ import annotations

import pytest

from recsys.config import resolve_config
from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.samplers import SAMPLERS
from recsys.samplers.ambiguous import AmbiguousSampler
from recsys.samplers.in_batch import InBatchConfig
from recsys.samplers.popularity import PopularityConfig
from recsys.samplers.topk import TopKSampler
from recsys.samplers.uniform import UniformConfig, UniformSampler
from tests.factories import rows_interactions

MINIMAL = {"data": {"name": "sample"}, "model": {"name": "mf"}}
TOPK = "sampler.name=topk"
NEEDS_NAME = "a nested sampler section needs a name"


def _train() -> Interactions:
    return rows_interactions([[0, 1], [2]], 20)


def _error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_config(MINIMAL, overrides, source="exp.yaml")
    message = str(caught.value)
    assert message.startswith("exp.yaml: ") and "\n" not in message
    return message


def test_a_nested_base_is_validated_by_its_own_config_class() -> None:
    config = resolve_config(MINIMAL, [TOPK, "sampler.k=2", "sampler.base={name: popularity, alpha: 0.5}"])
    assert config.sampler.base == PopularityConfig(alpha=0.5)
    # The logged config holds every field of the nested section (not only the base class's).
    assert config.to_dict()["sampler"]["base"] == PopularityConfig(alpha=0.5).model_dump(mode="json")
    assert config.flat()["sampler.base.alpha"] == 0.5


def test_the_default_base_is_a_blocked_uniform_pool_that_masks_positives() -> None:
    config = resolve_config(MINIMAL, [TOPK])
    assert config.sampler.base == UniformConfig(exclude_positives=True, pool=256, windows="blocks")
    assert config.flat()["sampler.base.pool"] == 256 and config.flat()["sampler.base.shared"] is False
    assert config.flat()["sampler.base.windows"] == "blocks"
    # A dotted override reaches into the nested section (it then names itself).
    config = resolve_config(MINIMAL, [TOPK, "sampler.base.name=uniform", "sampler.base.shared=false"])
    assert config.sampler.base == UniformConfig(shared=False)


def test_a_resolved_nested_config_builds_its_sampler() -> None:
    config = resolve_config(
        MINIMAL,
        ["sampler.name=ambiguous", "sampler.candidates=12", "sampler.n_negatives=3", "sampler.base={name: uniform}"],
    )
    sampler = SAMPLERS.build(config.sampler, _train(), config.seed)
    assert isinstance(sampler, AmbiguousSampler) and isinstance(sampler.base, UniformSampler)
    assert sampler.base.n_negatives == 12 and not sampler.base.shared
    # A topk over a topk: the outer's candidates are the inner's k (candidates: null).
    config = resolve_config(
        MINIMAL, [TOPK, "sampler.k=2", "sampler.candidates=null", "sampler.base={name: topk, k: 4, candidates: 8}"]
    )
    sampler = SAMPLERS.build(config.sampler, _train(), config.seed)
    assert isinstance(sampler, TopKSampler) and isinstance(sampler.base, TopKSampler)
    assert sampler.base.k == 4 and sampler.base.base.n_negatives == 8


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([TOPK, "sampler.base={name: uniform, n_negatvies: 3}"], "sampler.base.n_negatvies: unknown key"),
        ([TOPK, "sampler.base={name: uniform, n_negatives: 0}"], "sampler.base.n_negatives: Input should be greater"),
        ([TOPK, "sampler.base={name: unifrom}"], "sampler.base: unknown sampler 'unifrom' (known: "),
        ([TOPK, "sampler.base.exclude_positives=true"], f"sampler.base: {NEEDS_NAME}"),
        ([TOPK, "sampler.base={}"], f"sampler.base: {NEEDS_NAME}"),
        ([TOPK, "sampler.base=uniform"], "sampler.base: a sampler section must be a mapping"),
        ([TOPK, "sampler.base={name: topk, base: {name: uniform, bogus: 1}}"], "sampler.base.base.bogus: unknown key"),
        (["sampler.name=ambiguous", "sampler.base={name: mixed}"], "sampler.base.samplers: missing required key"),
        (
            ["sampler.name=mixed", "sampler.samplers=[{name: uniform}, {name: in_batch, n_negatives: 2, x: 1}]"],
            "sampler.samplers.1.x: unknown key",
        ),
        (
            ["sampler.name=mixed", "sampler.samplers=[{name: uniform}, {n_negatives: 2}]"],
            f"sampler.samplers.1: {NEEDS_NAME}",
        ),
        ([TOPK, "sampler.k=65"], "sampler: k (65) must not exceed candidates (64)"),
        (
            ["sampler.name=ambiguous", "sampler.n_negatives=9", "sampler.candidates=8"],
            "sampler: n_negatives (9) must not exceed candidates (8)",
        ),
    ],
)
def test_nested_mistakes_name_the_nested_key(overrides: list[str], expected: str) -> None:
    assert expected in _error(overrides)


def test_a_base_without_n_negatives_cannot_take_candidates() -> None:
    """``candidates`` sets the base's ``n_negatives``; a mixed base has none, so leaving ``candidates`` at
    its default of 64 is a mistake that resolving the config must report (not building the sampler)."""
    overrides = [TOPK, "sampler.base={name: mixed, samplers: [{name: uniform}, {name: in_batch}]}"]
    message = _error(overrides)
    assert "sampler: candidates: base sampler 'mixed' has no n_negatives to set" in message
    assert "candidates: null" in message


def test_candidates_null_keeps_a_mixed_bases_own_count() -> None:
    config = resolve_config(
        MINIMAL,
        [TOPK, "sampler.candidates=null", "sampler.k=2",
         "sampler.base={name: mixed, samplers: [{name: uniform, n_negatives: 3}, {name: in_batch}]}"],
    )
    assert config.sampler.base.samplers[1] == InBatchConfig()
    sampler = SAMPLERS.build(config.sampler, _train(), config.seed)
    assert [part.n_negatives for part in sampler.base.parts] == [3, None]


# --- samplers that only one loss can read ----------------------------------------------------------


def test_noisy_label_robust_and_nbpo_go_together() -> None:
    config = resolve_config(MINIMAL, ["sampler.name=noisy_label_robust", "loss.name=nbpo"])
    assert (config.sampler.name, config.loss.name) == ("noisy_label_robust", "nbpo")
    message = _error(["sampler.name=noisy_label_robust"])  # with the default loss, bpr
    assert "loss.name: sampler 'noisy_label_robust' and loss 'nbpo' go together" in message
    assert "(got sampler 'noisy_label_robust' with loss 'bpr')" in message
    message = _error(["loss.name=nbpo"])  # with the default sampler, uniform
    assert "(got sampler 'uniform' with loss 'nbpo')" in message
    assert "(got sampler 'noisy_label_robust' with loss 'sampled_softmax')" in _error(
        ["sampler.name=noisy_label_robust", "loss.name=sampled_softmax"]
    )


def test_other_samplers_take_any_loss() -> None:
    config = resolve_config(MINIMAL, ["sampler.name=mnar", "loss.name=relmf", "loss.form=square"])
    assert config.loss.form == "square"
    config = resolve_config(MINIMAL, ["sampler.name=mnar", "loss.name=bpr"])
    assert config.sampler.name == "mnar"
    config = resolve_config(MINIMAL, [TOPK, "loss.name=sampled_softmax", "loss.temperature=0.05"])
    assert config.loss.temperature == 0.05
