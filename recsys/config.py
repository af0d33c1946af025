"""The experiment config: one YAML file plus dotted overrides -> a typed ``ExperimentConfig``.

Sections: ``data``, ``model``, ``sampler``, ``loss``, ``train``, ``eval``, ``tracking`` and ``seed``
(DESIGN.md, "The command line"). ``model.name``, ``sampler.name`` and ``loss.name`` pick the
implementation and thereby the config class that checks the rest of the section. Unknown keys and
wrong types are ``ConfigError``s naming the file and the dotted key.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError

from recsys.data.config import DataConfig, with_manifest_defaults
from recsys.errors import ConfigError
from recsys.evaluation.evaluator import EvalConfig
from recsys.interfaces import Section
from recsys.losses import LOSSES
from recsys.models import MODELS
from recsys.models.optimizers import OptimizerName
from recsys.registry import Registry
from recsys.samplers import SAMPLERS

__all__ = ["ExperimentConfig", "TrackingConfig", "TrainConfig", "load_config", "parse_yaml"]

_SECTIONS = ("seed", "data", "model", "sampler", "loss", "train", "eval", "tracking")
_REGISTRIES: dict[str, Registry[Any]] = {"model": MODELS, "sampler": SAMPLERS, "loss": LOSSES}
_DEFAULT_NAMES = {"sampler": "uniform", "loss": "bpr"}
# Trainer arguments that recsys sets itself (callbacks, logging, checkpoints).
_RESERVED_TRAINER_ARGUMENTS = {"self", "callbacks", "logger", "default_root_dir", "enable_checkpointing", "plugins"}


# Trainer arguments that count training batches (Lightning counts `training_step` calls).
_BATCH_COUNTING = {"limit_train_batches", "val_check_interval"}


class TrainConfig(Section):
    """The ``train`` section: recsys's own keys, plus any ``lightning.Trainer`` argument."""

    model_config = ConfigDict(extra="allow", frozen=True)

    batch_size: int = Field(2048, ge=1)
    optimizer: OptimizerName = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(10, ge=1)  # validation epochs without improvement before stopping
    monitor: str = "val/ndcg@20"
    max_epochs: int = Field(300, ge=1)
    # Training batches per Lightning `training_step` call (each still one optimizer step); null: about
    # ten calls per epoch. Lightning's per-call bookkeeping is a fifth of a small MF epoch.
    batches_per_call: int | None = Field(None, ge=1)
    # After early stopping picks the best epoch on validation, train afresh on train + validation for
    # that many epochs and test that model (the papers' protocol: they train on the whole train file).
    refit: bool = False
    # Refit for this many epochs without a selection run (a count chosen before, e.g. an earlier run's
    # best epoch + 1; with max_time, a time budget on all training data).
    refit_epochs: int | None = Field(None, ge=1)
    # How an epoch's (user, positive) pairs are drawn: `interactions`, every training pair once
    # (RecBole, BARS); `users`, as many pairs with users drawn uniformly (LightGCN's reference code).
    pair_sampling: Literal["interactions", "users"] = "interactions"
    # Multiply the learning rate by this factor after `lr_patience` validations without improvement
    # of `monitor`, down to `min_lr` (FuxiCTR's reduce_lr_on_plateau, which BARS's runs use: 0.1 after
    # each, floor 1e-6; recsys.models.lr_decay); a refit makes the selection run's cuts at its epochs.
    # Null: a constant learning rate.
    lr_decay: float | None = Field(None, gt=0, lt=1)
    lr_patience: int = Field(1, ge=1)
    min_lr: float = Field(1e-6, ge=0)
    # With refit_epochs and lr_decay: the epochs after which the refit cuts the learning rate, e.g. an
    # earlier selection run's `lr_cuts` tag, so a known schedule is refitted without selecting again.
    refit_lr_cuts: list[Annotated[int, Field(ge=0)]] | None = None
    # Test the refitting model every this many epochs, logged as refit/test/... by epoch: a curve to
    # watch a long refit by, as the papers' code prints one. It chooses nothing: the refit's epoch
    # count is fixed, and its test/... metrics are those of its last epoch. Null: test once, at the end.
    refit_test_every: int | None = Field(None, ge=1)

    def trainer_arguments(self) -> dict[str, Any]:
        """The Lightning ``Trainer`` arguments given in this section (besides ``max_epochs``)."""
        return dict(self.model_extra or {})

    def grouping(self) -> int | None:
        """``batches_per_call``, or 1 where a Trainer argument counts training batches
        (``limit_train_batches``, ``val_check_interval``): Lightning counts calls, so those keep their
        meaning only with one batch per call."""
        if self.batches_per_call is None and _BATCH_COUNTING & set(self.trainer_arguments()):
            return 1
        return self.batches_per_call


class TrackingConfig(Section):
    """The ``tracking`` section."""

    experiment: str = "recsys"
    run_name: str | None = None  # default: model-sampler-loss-dataset
    log_checkpoint: bool = True  # store the best checkpoint as a run artifact


@dataclass(frozen=True)
class ExperimentConfig:
    """A resolved, validated experiment; ``to_dict()`` is what gets logged and saved."""

    seed: int
    data: DataConfig
    model: Section
    sampler: Section
    loss: Section
    train: TrainConfig
    eval: EvalConfig
    tracking: TrackingConfig
    source: str = "<config>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            **{name: getattr(self, name).model_dump(mode="json") for name in _SECTIONS[1:]},
        }

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (lists kept whole): the run's MLflow params."""
        return _flatten(self.to_dict())

    def run_name(self) -> str:
        if self.tracking.run_name:
            return self.tracking.run_name
        return f"{self.model.name}-{self.sampler.name}-{self.loss.name}-{self.data.name}"  # type: ignore[attr-defined]


def load_config(path: Path | str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read ``path``, apply ``key.sub=value`` overrides, and validate.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or value (naming file and key).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    raw = parse_yaml(path.read_text(), str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    return resolve_config(raw, overrides, str(path))


def resolve_config(raw: dict[str, Any], overrides: Sequence[str] = (), source: str = "<config>") -> ExperimentConfig:
    """Validate a raw config mapping (as read from YAML) with overrides applied."""
    raw = _apply_overrides(raw, overrides, source)
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown section (known: {', '.join(_SECTIONS)})")
    for required in ("data", "model"):
        if required not in raw:
            raise ConfigError(f"{source}: {required}: missing section")
    sections: dict[str, Any] = {}
    for name in ("data", "model", "sampler", "loss", "train", "eval", "tracking"):
        value = raw.get(name, {})
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name}: must be a mapping, got {value!r}")
        sections[name] = _section(name, value, source)
    seed = raw.get("seed", 2020)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{source}: seed: must be a non-negative integer, got {seed!r}")
    config = ExperimentConfig(seed=seed, source=source, **sections)
    _check_across_sections(config, source)
    return config


def parse_yaml(text: str, source: str) -> Any:
    """YAML with floats like ``1e-3`` read as numbers (YAML 1.1 would read them as strings)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "cannot parse"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _section(name: str, value: dict[str, Any], source: str) -> Section:
    if name == "data":
        return _validate(DataConfig, with_manifest_defaults(value), "data", source)
    if name in _REGISTRIES:
        registry = _REGISTRIES[name]
        value = {"name": _DEFAULT_NAMES.get(name), **value} if "name" not in value else value
        if value["name"] is None:
            raise ConfigError(f"{source}: {name}.name: missing (known: {', '.join(registry.names())})")
        try:
            config_class = registry.config_class(value["name"])
        except KeyError as error:
            raise ConfigError(f"{source}: {name}.name: {error.args[0]}") from None
        return _validate(config_class, value, name, source)
    classes = {"train": TrainConfig, "eval": EvalConfig, "tracking": TrackingConfig}
    section = _validate(classes[name], value, name, source)
    if name == "train":
        allowed = _trainer_arguments()
        for key in section.model_extra or {}:
            if key not in allowed:
                raise ConfigError(
                    f"{source}: train.{key}: unknown key (neither a recsys train option nor a "
                    "lightning Trainer argument)"
                )
    return section


def _validate(config_class: type[Section], value: dict[str, Any], where: str, source: str) -> Section:
    try:
        return config_class.model_validate(value)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in (where, *first["loc"]))
        if first["type"] == "extra_forbidden":
            reason = "unknown key"
            if len(first["loc"]) == 1:
                reason += f" (known: {', '.join(config_class.model_fields)})"
        elif first["type"] == "missing":
            reason = "missing required key"
        elif first["type"] == "value_error":  # our own validators' messages say what they got
            reason = first["msg"].removeprefix("Value error, ")
        else:
            reason = first["msg"]
            if not isinstance(first.get("input"), dict):
                reason += f", got {first.get('input')!r}"
        raise ConfigError(f"{source}: {location}: {reason}") from None


@cache
def _trainer_arguments() -> frozenset[str]:
    import lightning.pytorch as L

    return frozenset(inspect.signature(L.Trainer.__init__).parameters) - _RESERVED_TRAINER_ARGUMENTS


# Samplers whose extra outputs only one loss reads, and that loss (both ways).
_PAIRED = {"noisy_label_robust": "nbpo"}


def _check_across_sections(config: ExperimentConfig, source: str) -> None:
    sampler, loss = config.sampler.name, config.loss.name  # type: ignore[attr-defined]
    for paired_sampler, paired_loss in _PAIRED.items():
        if (sampler == paired_sampler) != (loss == paired_loss):
            raise ConfigError(
                f"{source}: loss.name: sampler {paired_sampler!r} and loss {paired_loss!r} go together "
                f"(got sampler {sampler!r} with loss {loss!r})"
            )
    sequential = getattr(type(config.model), "session_model", False)  # a ClassVar of session models
    if sequential != config.data.sessions:
        needs = "session data (data.format: yoochoose|diginetica|otto)" if sequential else "user-item data"
        raise ConfigError(f"{source}: model.name: {config.model.name!r} trains on {needs}; data {config.data.name!r} is not")  # type: ignore[attr-defined]
    if config.eval.protocol == "exposed" and not config.data.exposed_test:
        raise ConfigError(f"{source}: eval.protocol: 'exposed' needs data with a randomly exposed test set "
                          "(data.exposed_test: true)")
    if config.data.sessions and (config.eval.ips or config.eval.protocol != "full"):
        raise ConfigError(f"{source}: eval: ips and protocol 'exposed' are for user-item data, not sessions")
    monitor = config.train.monitor
    computed = config.eval.metric_names()
    if not monitor.startswith("val/") or monitor.removeprefix("val/") not in computed:
        raise ConfigError(
            f"{source}: train.monitor: {monitor!r} is not computed; use val/ with one of: {', '.join(computed)}"
        )
    train = config.train
    if train.lr_decay is not None and train.refit_epochs is not None and train.refit_lr_cuts is None:
        raise ConfigError(f"{source}: train.lr_decay: train.refit_epochs has no validation to decay on; "
                          "give the cuts as train.refit_lr_cuts (a selection run's lr_cuts tag) or use "
                          "train.refit: true, which makes the selection run's cuts again")
    if train.refit_lr_cuts is not None and (train.lr_decay is None or train.refit_epochs is None):
        raise ConfigError(f"{source}: train.refit_lr_cuts: a cut schedule for a refit needs both "
                          "train.refit_epochs and train.lr_decay")
    if train.refit_test_every is not None and not (train.refit or train.refit_epochs is not None):
        raise ConfigError(f"{source}: train.refit_test_every: a test curve is for a refit; set train.refit: "
                          "true or train.refit_epochs (a fit that selects on validation does not test as it goes)")


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str], source: str) -> dict[str, Any]:
    """Set each ``dotted.key=value`` (value parsed as YAML) in a copy of ``raw``.

    When an override changes ``model|sampler|loss.name``, keys of that section from the file that the
    new implementation does not accept are dropped, with a note on stderr.
    """
    raw = _deep_copy(raw)
    overridden: set[tuple[str, ...]] = set()
    renamed: set[str] = set()
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key:
            raise ConfigError(f"override {override!r}: expected dotted.key=value")
        path = tuple(key.split("."))
        value = parse_yaml(text, f"override {key}") if text else ""
        node = raw
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {'.'.join(path[: depth + 1])} is not a section")
            node = child
        if len(path) == 2 and path[0] in _REGISTRIES and path[1] == "name" and node.get("name") != value:
            renamed.add(path[0])
        node[path[-1]] = value
        overridden.add(path)
    for section in sorted(renamed):
        node = raw[section]
        try:
            fields = _REGISTRIES[section].config_class(node["name"]).model_fields
        except KeyError:
            continue  # reported when the section is validated
        for key in list(node):
            if key not in fields and (section, key) not in overridden:
                print(
                    f"recsys: note: {section}.name={node['name']}: dropping {section}.{key} from {source} "
                    f"(not an option of {node['name']})",
                    file=sys.stderr,
                )
                del node[key]
    return raw


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
