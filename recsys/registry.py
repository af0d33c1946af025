"""A registry maps a config section's ``name`` to its typed config class and its builder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from recsys.interfaces import Section

__all__ = ["Component", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Component(Generic[T]):
    """One implementation: its config class (with a ``name`` Literal) and how to build it."""

    config: type[Section]
    build: Callable[..., T]


class Registry(Generic[T]):
    """Implementations of one kind (``model``, ``sampler``, ``loss``), looked up once by name."""

    def __init__(self, kind: str, components: Mapping[str, Component[T]]) -> None:
        self.kind = kind
        self.components = dict(components)

    def names(self) -> list[str]:
        return sorted(self.components)

    def config_class(self, name: Any) -> type[Section]:
        """The config class for ``name``; KeyError names the known ones."""
        if name not in self.components:
            raise KeyError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})")
        return self.components[name].config

    def build(self, config: Section, *args: Any, **kwargs: Any) -> T:
        return self.components[config.name].build(config, *args, **kwargs)  # type: ignore[attr-defined]
