"""Import a Hugging Face checkpoint directory of a supported family (no torch needed).

The directory holds `config.json` and either `model.safetensors` or a sharded
`model.safetensors.index.json`. Config conversion (a strict whitelist per family) is
`headjax.io.hf_config.config_from_hf`; the families are `hf_config.ARCHITECTURES`.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
from safetensors import SafetensorError, safe_open

from headjax.io import layout
from headjax.io.hf_config import ARCHITECTURES, config_from_hf
from headjax.model.config import ModelConfig

__all__ = ["ARCHITECTURES", "config_from_hf", "load_hf", "read_config_json"]

# Tensors a checkpoint may carry that we rebuild ourselves.
IGNORED_TENSORS = ("rotary_emb.inv_freq",)


def read_config_json(path: str) -> dict:
    """The JSON object in `path`, with errors naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path) as f:
            values = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return values


def _safetensors_problem(path: str) -> str:
    """What is wrong with a `.safetensors` file the library refused, in words."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return "not a safetensors file (shorter than its 8-byte header)"
        (header_len,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(f.read(header_len))
            ends = {name: 8 + header_len + entry["data_offsets"][1]
                    for name, entry in header.items() if name != "__metadata__"}
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as err:
            return f"corrupt safetensors header ({err})"
    past = [name for name, end in ends.items() if end > size]
    if header_len > size - 8 or past:
        return (f"truncated safetensors file: tensor {past[0]!r} ends past its {size} bytes"
                if past else f"truncated safetensors file ({size} bytes)")
    return "unreadable safetensors file"


def _open_safetensors(path: str):
    """A `safetensors.safe_open` handle (numpy) on `path`; a file it refuses is one ValueError
    naming the file and the problem."""
    try:
        return safe_open(path, framework="np")
    except SafetensorError as err:
        raise ValueError(f"{path}: {_safetensors_problem(path)}") from err


def _open_shards(directory: str) -> dict:
    """{tensor name: the open file holding it} for `model.safetensors` or its sharded index."""
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(single):
        shard = _open_safetensors(single)
        return {name: shard for name in shard.keys()}  # noqa: SIM118 (a handle, not a dict)
    if os.path.isfile(index):
        weight_map = read_config_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: missing 'weight_map'")
        shards = {f: _open_safetensors(os.path.join(directory, f))
                  for f in set(weight_map.values())}
        names = {f: set(shard.keys()) for f, shard in shards.items()}  # noqa: SIM118
        located = {}
        for name, file in weight_map.items():
            if name not in names[file]:
                raise ValueError(f"{os.path.join(directory, file)}: tensor {name!r} listed in "
                                 f"{index} is missing")
            located[name] = shards[file]
        return located
    raise FileNotFoundError(f"{directory}: no model.safetensors or model.safetensors.index.json")


def load_hf(directory: str, *, dtype: str = "float32") -> tuple[dict, ModelConfig]:
    """(numpy params in `dtype`, ModelConfig) from a Hugging Face checkpoint directory."""
    config_path = os.path.join(directory, "config.json")
    config = config_from_hf(read_config_json(config_path), source=config_path, dtype=dtype)
    located = _open_shards(directory)
    expected = set(layout.expected_names(config, "hf"))
    if config.tie_embeddings:
        located.pop("lm_head.weight", None)
    unexpected = sorted(n for n in set(located) - expected if not n.endswith(IGNORED_TENSORS))
    if unexpected:
        raise ValueError(f"{directory}: unexpected tensors for {config_path}: {unexpected[:5]}")

    def read(name: str, rule: layout.Rule) -> np.ndarray:
        if name not in located:
            raise ValueError(f"{directory}: tensor {name!r} is missing from the checkpoint")
        return located[name].get_tensor(name).astype(np.float32)

    return layout.to_canonical(read, config, "hf", dtype), config
