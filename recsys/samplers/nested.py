"""A sampler config inside another one (the base of a wrapper, the parts of a mixture)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, SerializeAsAny

from recsys.interfaces import Section

__all__ = ["NestedSampler"]


def _sampler_section(value: Any) -> Section:
    if isinstance(value, Section):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"a sampler section must be a mapping, got {value!r}")
    from recsys.samplers import SAMPLERS  # the registry imports the samplers that nest others

    if "name" not in value:
        raise ValueError(f"a nested sampler section needs a name (known: {', '.join(SAMPLERS.names())})")
    try:
        config_class = SAMPLERS.config_class(value.get("name"))
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    return config_class.model_validate(value)


NestedSampler = Annotated[SerializeAsAny[Section], BeforeValidator(_sampler_section)]
"""A field holding a sampler's config, validated by that sampler's own config class (by ``name``)."""
