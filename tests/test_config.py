"""The experiment config: typed sections, dotted overrides, errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recsys.config import load_config, parse_yaml, resolve_config
from recsys.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"data": {"name": "sample"}, "model": {"name": "mf"}}


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_fill_every_section() -> None:
    config = resolve_config(MINIMAL)
    assert config.sampler.name == "uniform" and config.loss.name == "bpr"
    assert config.data.format == "csv"  # from the manifest entry of `sample`
    assert config.train.batch_size == 2048 and config.eval.ks == (10, 20)
    flat = config.flat()
    assert flat["model.dim"] == 64 and flat["data.split.method"] == "random"


def test_scientific_floats_are_numbers() -> None:
    # YAML 1.1 reads `1e-3` as a string; our loader reads it as the float it obviously is.
    assert parse_yaml("lr: 1e-3", "x")["lr"] == pytest.approx(1e-3)
    config = resolve_config(MINIMAL, ["train.lr=5e-4"])
    assert config.train.lr == pytest.approx(5e-4)


def test_overrides_set_nested_keys_and_parse_values() -> None:
    config = resolve_config(MINIMAL, ["model.dim=16", "eval.ks=[5, 20]", "sampler.exclude_positives=true"])
    assert config.model.dim == 16
    assert config.eval.ks == (5, 20)
    assert config.sampler.exclude_positives is True


@pytest.mark.parametrize(
    ("raw", "overrides", "expected"),
    [
        (MINIMAL, ["model.dimension=3"], "model.dimension: unknown key (known: name, dim, init, init_std)"),
        (MINIMAL, ["model.dim=abc"], "model.dim: Input should be a valid integer"),
        (MINIMAL, ["model.dim=0"], "model.dim: Input should be greater than or equal to 1"),
        (MINIMAL, ["model.name=nope"], "model.name: unknown model 'nope' (known: lightgcn, mf, sasrec, simplex, weighted_svd)"),
        (MINIMAL, ["train.max_epoch=3"], "train.max_epoch: unknown key"),
        (MINIMAL, ["data.split.method=sideways"], "data.split.method: Input should be"),
        (MINIMAL, ["trian.lr=1"], "trian: unknown section"),
        (MINIMAL, ["train.monitor=val/ndcg@50"], "train.monitor: 'val/ndcg@50' is not computed"),
        ({"model": {"name": "mf"}}, [], "data: missing section"),
        (MINIMAL, ["seed=-1"], "seed: must be a non-negative integer"),
        (MINIMAL, ["eval.metrics=[recall, auc]"], "eval.metrics.1: Input should be"),
    ],
)
def test_mistakes_name_the_key(raw: dict, overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(raw, overrides, source="exp.yaml")
    message = str(caught.value)
    assert message.startswith("exp.yaml: ") or message.startswith("override ")
    assert expected in message
    assert "\n" not in message


def test_trainer_arguments_pass_through_and_typos_do_not() -> None:
    config = resolve_config(MINIMAL, ["train.limit_train_batches=2", "train.accelerator=cpu"])
    assert config.train.trainer_arguments() == {"limit_train_batches": 2, "accelerator": "cpu"}
    with pytest.raises(ConfigError, match="train.callbacks: unknown key"):
        resolve_config(MINIMAL, ["train.callbacks=[]"])  # recsys sets callbacks itself


def test_batch_counting_trainer_arguments_train_one_batch_per_call() -> None:
    assert resolve_config(MINIMAL, []).train.grouping() is None  # about ten calls per epoch
    for counting in ("train.limit_train_batches=2", "train.val_check_interval=50"):
        assert resolve_config(MINIMAL, [counting]).train.grouping() == 1
    assert resolve_config(MINIMAL, ["train.limit_train_batches=2", "train.batches_per_call=4"]).train.grouping() == 4
    assert resolve_config(MINIMAL, ["train.batches_per_call=3"]).train.grouping() == 3
    with pytest.raises(ConfigError, match="train.batches_per_call"):
        resolve_config(MINIMAL, ["train.batches_per_call=0"])


def test_an_override_switches_the_implementation() -> None:
    config = resolve_config({**MINIMAL, "loss": {"name": "bce"}}, ["loss.name=bpr"])
    assert config.loss.name == "bpr"
    # A key no implementation of the section takes is an error when it comes from the command line.
    with pytest.raises(ConfigError, match="sampler.alpha: unknown key"):
        resolve_config(MINIMAL, ["sampler.alpha=0.5"])


def test_malformed_override_and_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        resolve_config(MINIMAL, ["model.dim"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: mf\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a config must be a mapping"):
        load_config(listed)


def test_data_section_overrides_the_manifest(tmp_path: Path) -> None:
    path = _write(tmp_path, {**MINIMAL, "data": {"name": "ml-100k", "rating_threshold": 4}})
    config = load_config(path)
    assert config.data.format == "recbole" and config.data.file == "ml-100k.inter"
    assert config.data.rating_threshold == 4.0


def test_given_split_needs_its_files() -> None:
    with pytest.raises(ConfigError, match="data: .*needs train_file and test_file"):
        resolve_config({**MINIMAL, "data": {"name": "x", "format": "csv", "split": {"method": "given"}}})


SEARCH_SPACES = REPO / "configs" / "search"
GRIDS = REPO / "configs" / "bench"  # benchmark grids: tests/test_bench_grid.py


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").rglob("*.yaml") if not {SEARCH_SPACES, GRIDS} & set(p.parents)),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.to_dict()["model"]["name"] == config.model.name


@pytest.mark.parametrize("path", sorted(SEARCH_SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_search_space_loads(path: Path) -> None:
    from recsys.tuning.space import load_space

    assert load_space(path).parameters
