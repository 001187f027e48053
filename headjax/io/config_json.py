"""`ModelConfig` <-> plain JSON-ready dicts (native checkpoints, run directories)."""

from __future__ import annotations

import dataclasses

from headjax.model.config import ModelConfig, RopeScaling


def config_to_dict(config: ModelConfig) -> dict:
    """Every `ModelConfig` field as JSON-ready values (rope_scaling as a nested dict)."""
    return dataclasses.asdict(config)


def config_from_dict(values: dict, *, source: str = "config") -> ModelConfig:
    """The `ModelConfig` written by `config_to_dict`; unknown keys raise naming `source`."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown ModelConfig fields {unknown}")
    values = dict(values)
    scaling = values.get("rope_scaling")
    if isinstance(scaling, dict):
        values["rope_scaling"] = RopeScaling(**scaling)
    return ModelConfig(**values)
