"""headjax native checkpoints: orbax params + `model_config.json` + tokenizer files.

Layout of a native directory:

    params/              orbax StandardCheckpointer tree (the canonical param tree)
    model_config.json    `config_to_dict(config)` plus {"format": "headjax-native"}
    tokenizer/           optional `TextTokenizer.save` output

A save writes everything into a temporary sibling directory and renames it into place, so an
interrupted save never leaves a half-written checkpoint under `path`.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

from headjax.io.config_json import config_from_dict, config_to_dict
from headjax.io.output import staged_directory
from headjax.io.tokenizer import TextTokenizer
from headjax.model.config import ModelConfig
from headjax.model.transformer import Params, param_shapes

FORMAT = "headjax-native"
CONFIG_FILE = "model_config.json"


def is_native(path: str) -> bool:
    """Whether `path` is a native checkpoint directory."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def save_native(path: str, params: Params, config: ModelConfig,
                tokenizer: TextTokenizer | None = None, *, overwrite: bool = False) -> None:
    """Write a native checkpoint to the directory `path` atomically: `path` must not exist or be
    empty, unless `overwrite` (then the old directory is replaced once the new one is whole)."""
    with staged_directory(path, overwrite=overwrite) as staging:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(staging, "params"), params)
        checkpointer.wait_until_finished()
        with open(os.path.join(staging, CONFIG_FILE), "w") as f:
            json.dump({"format": FORMAT, **config_to_dict(config)}, f, indent=2)
        if tokenizer is not None:
            tokenizer.save(os.path.join(staging, "tokenizer"))


def read_native_config(path: str) -> ModelConfig:
    """The `ModelConfig` of the native checkpoint directory `path` (no weight read)."""
    config_path = os.path.join(os.path.abspath(path), CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path}: no such file (not a headjax native checkpoint)")
    with open(config_path) as f:
        values = json.load(f)
    if values.pop("format", None) != FORMAT:
        raise ValueError(f"{config_path}: 'format' is not {FORMAT!r}")
    return config_from_dict(values, source=config_path)


def load_native(path: str) -> tuple[Params, ModelConfig, TextTokenizer | None]:
    """(params, config, tokenizer or None) from a native checkpoint directory."""
    path = os.path.abspath(path)
    config = read_native_config(path)
    dtype = jax.numpy.dtype(config.param_dtype)
    abstract = jax.tree.map(lambda shape: jax.ShapeDtypeStruct(shape, dtype), param_shapes(config),
                            is_leaf=lambda x: isinstance(x, tuple))
    params = ocp.StandardCheckpointer().restore(os.path.join(path, "params"), abstract)
    tokenizer_dir = os.path.join(path, "tokenizer")
    tokenizer = TextTokenizer.from_hf_dir(tokenizer_dir) if os.path.isdir(tokenizer_dir) else None
    return params, config, tokenizer
