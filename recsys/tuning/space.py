"""A search space in YAML: which config keys a study varies, how, and when (conditional parameters).

```yaml
sampler: tpe            # tpe (default) | random | grid
pruner: median          # median (default) | hyperband | none
seed: 0                 # the search sampler's seed (default: the experiment's)
parameters:             # dotted config keys, suggested in this order
  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  model.dim: {type: int, low: 16, high: 128, step: 16}
  sampler.name: {type: categorical, choices: [uniform, popularity, topk]}
  sampler.alpha: {type: float, low: 0.0, high: 1.0, when: {sampler.name: popularity}}
  sampler.k: {type: int, low: 1, high: 4, when: {sampler.name: [topk]}}
```

A parameter with ``when`` is suggested only in trials whose earlier parameters take one of the given
values; otherwise the experiment config's own value stands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recsys.errors import ConfigError

__all__ = ["Parameter", "SearchSpace", "load_space", "overrides"]


class Parameter(BaseModel):
    """One searched config key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: tuple[Any, ...] | None = None
    when: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> Parameter:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} parameter needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("log needs low > 0")
        return self

    def allowed(self, chosen: dict[str, Any]) -> bool:
        """Whether the trial's earlier choices meet every ``when`` condition."""
        for key, wanted in self.when.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            if key not in chosen or chosen[key] not in values:
                return False
        return True

    def grid_values(self) -> list[Any]:
        """Every value a grid search tries: the choices, or an int range by ``step``."""
        if self.type == "categorical":
            return list(self.choices or ())
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))  # type: ignore[arg-type]
        raise ValueError("a grid search needs categorical or int parameters (give floats as choices)")


class SearchSpace(BaseModel):
    """A study's search: parameters, search sampler and pruner."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int | None = None
    parameters: dict[str, Parameter]

    @model_validator(mode="after")
    def _conditions_refer_back(self) -> SearchSpace:
        if not self.parameters:
            raise ValueError("parameters: give at least one")
        seen: list[str] = []
        for key, parameter in self.parameters.items():
            for condition in parameter.when:
                if condition not in seen:
                    raise ValueError(f"{key}: when refers to {condition!r}, which is not a parameter declared before it")
            seen.append(key)
        if self.sampler == "grid":
            for key, parameter in self.parameters.items():
                if parameter.when:
                    raise ValueError(f"{key}: a grid search cannot have conditional parameters")
                try:
                    parameter.grid_values()
                except ValueError as error:
                    raise ValueError(f"{key}: {error}") from None
        return self

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The trial's values (an Optuna ``Trial``), in declaration order, conditions applied."""
        chosen: dict[str, Any] = {}
        for key, parameter in self.parameters.items():
            if not parameter.allowed(chosen):
                continue
            if parameter.type == "categorical":
                chosen[key] = trial.suggest_categorical(key, list(parameter.choices or ()))
            elif parameter.type == "int":
                chosen[key] = trial.suggest_int(key, int(parameter.low), int(parameter.high),  # type: ignore[arg-type]
                                                step=int(parameter.step or 1), log=parameter.log)
            else:
                chosen[key] = trial.suggest_float(key, parameter.low, parameter.high, step=parameter.step,  # type: ignore[arg-type]
                                                  log=parameter.log)
        return chosen

    def grid(self) -> dict[str, list[Any]]:
        """The search space of ``optuna.samplers.GridSampler``."""
        return {key: parameter.grid_values() for key, parameter in self.parameters.items()}


def overrides(values: dict[str, Any]) -> list[str]:
    """``dotted.key=value`` overrides of chosen values (YAML-encoded, as the command line takes them)."""
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in values.items()]


def load_space(path: Path) -> SearchSpace:
    """Read and validate a search space file; a mistake is a ``ConfigError`` naming the file and key."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such search space file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a search space is a mapping with `parameters`")
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where + ': ' if where else ''}{message}") from None
