"""Table-driven tensor layout: checkpoint tensor names <-> the canonical param tree.

One `Rule` per weight says where a checkpoint tensor lives in the canonical tree (see
`headjax.model.transformer`) and how its torch layout `[out_features, in_features]` maps onto ours:

    q/k/v_proj  [heads * head_dim, d_model]  ->  [d_model, heads, head_dim]   (in_dims=1)
    o_proj      [d_model, heads * head_dim]  ->  [heads, head_dim, d_model]   (in_dims=2)
    MLP, lm_head [out, in]                   ->  [in, out]                    (in_dims=1)
    norms, embeddings, biases                ->  reshaped only                (in_dims=None)

Names are given twice: Hugging Face (`model.layers.{i}.self_attn.q_proj.weight`) and GGUF
(`blk.{i}.attn_q.weight`). Per-layer tensors are stacked on a leading `layers` axis. With
sandwich norms (Gemma) Hugging Face's `post_attention_layernorm` is the norm on the attention
output (`post_attn_norm`) and `pre_feedforward_layernorm` the pre-MLP one (`mlp_norm`); without,
`post_attention_layernorm` is the pre-MLP norm (Llama).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from headjax.model.config import ModelConfig
from headjax.model.transformer import param_shapes


@dataclasses.dataclass(frozen=True)
class Rule:
    """One weight: its canonical key, its HF and GGUF names, and its matrix layout.

    in_dims: None for tensors that are only reshaped; otherwise the number of leading dims of our
      (per-layer) shape that form the torch `in_features` (the torch tensor is transposed).
    flat: the checkpoint stores the tensor flattened (q/k/v biases `[heads * head_dim]`).
    """

    key: str
    hf_name: str
    gguf_name: str
    in_dims: int | None = None
    flat: bool = False

    def to_canonical(self, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A checkpoint tensor in torch layout -> our layout with `shape` (one layer's)."""
        if self.in_dims is not None:
            if tensor.ndim != 2:
                raise ValueError(f"expected a 2-d [out, in] matrix, got shape {tensor.shape}")
            tensor = tensor.T
        if math.prod(tensor.shape) != math.prod(shape):
            raise ValueError(f"shape {tensor.shape} does not fit the expected {shape}")
        return np.ascontiguousarray(tensor).reshape(shape)

    def to_torch(self, value: np.ndarray) -> np.ndarray:
        """Our layout (one layer's) -> the checkpoint tensor in torch layout."""
        if self.in_dims is None:
            return np.ascontiguousarray(value).reshape(-1) if self.flat else value
        rows = math.prod(value.shape[:self.in_dims])
        return np.ascontiguousarray(value.reshape(rows, -1).T)


LAYER_RULES = (
    Rule("attn_norm", "model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight"),
    Rule("q_proj", "model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight", 1),
    Rule("k_proj", "model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight", 1),
    Rule("v_proj", "model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight", 1),
    Rule("q_bias", "model.layers.{i}.self_attn.q_proj.bias", "blk.{i}.attn_q.bias",
         flat=True),
    Rule("k_bias", "model.layers.{i}.self_attn.k_proj.bias", "blk.{i}.attn_k.bias",
         flat=True),
    Rule("v_bias", "model.layers.{i}.self_attn.v_proj.bias", "blk.{i}.attn_v.bias",
         flat=True),
    Rule("o_proj", "model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight", 2),
    Rule("q_norm", "model.layers.{i}.self_attn.q_norm.weight", "blk.{i}.attn_q_norm.weight"),
    Rule("k_norm", "model.layers.{i}.self_attn.k_norm.weight", "blk.{i}.attn_k_norm.weight"),
    Rule("mlp_norm", "model.layers.{i}.post_attention_layernorm.weight",
         "blk.{i}.ffn_norm.weight"),
    Rule("gate_proj", "model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", 1),
    Rule("up_proj", "model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight", 1),
    Rule("down_proj", "model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight", 1),
)
SANDWICH_RULES = (
    Rule("post_attn_norm", "model.layers.{i}.post_attention_layernorm.weight",
         "blk.{i}.post_attention_norm.weight"),
    Rule("mlp_norm", "model.layers.{i}.pre_feedforward_layernorm.weight",
         "blk.{i}.ffn_norm.weight"),
    Rule("post_mlp_norm", "model.layers.{i}.post_feedforward_layernorm.weight",
         "blk.{i}.post_ffw_norm.weight"),
)
TOP_RULES = (
    Rule("embed", "model.embed_tokens.weight", "token_embd.weight"),
    Rule("final_norm", "model.norm.weight", "output_norm.weight"),
    Rule("lm_head", "lm_head.weight", "output.weight", 1),
)


def checkpoint_name(rule: Rule, naming: str, layer: int | None = None) -> str:
    """The tensor's name in a checkpoint of `naming` ("hf" or "gguf")."""
    template = rule.hf_name if naming == "hf" else rule.gguf_name
    return template.format(i=layer)


def layer_rules(config: ModelConfig) -> tuple[Rule, ...]:
    """The per-layer rules of `config`'s params (sandwich-norm names when it has them)."""
    keys = param_shapes(config)["layers"]
    if not config.sandwich_norms:
        return tuple(r for r in LAYER_RULES if r.key in keys)
    sandwich = {r.key: r for r in SANDWICH_RULES}
    rules = [sandwich.pop(r.key, r) for r in LAYER_RULES if r.key in keys]
    return tuple(rules) + tuple(sandwich.values())


def expected_names(config: ModelConfig, naming: str) -> list[str]:
    """Every tensor name a checkpoint of `config` holds, in table order."""
    shapes = param_shapes(config)
    names = [checkpoint_name(r, naming, i) for i in range(config.num_layers)
             for r in layer_rules(config)]
    return names + [checkpoint_name(r, naming) for r in TOP_RULES if r.key in shapes]


def to_canonical(read: Callable[[str, Rule], np.ndarray], config: ModelConfig, naming: str,
                 dtype: str = "float32") -> dict:
    """The canonical param tree (numpy, `dtype`) from `read(name, rule) -> torch-layout tensor`.

    A tensor that does not fit its expected shape raises a ValueError naming the tensor.
    """
    shapes = param_shapes(config)
    np_dtype = np.dtype(jnp.dtype(dtype))

    def convert(rule: Rule, shape: tuple[int, ...], layer: int | None) -> np.ndarray:
        name = checkpoint_name(rule, naming, layer)
        tensor = read(name, rule)
        try:
            return rule.to_canonical(tensor, shape).astype(np_dtype)
        except ValueError as err:
            raise ValueError(f"tensor {name!r}: {err}") from err

    layers = {r.key: np.stack([convert(r, shapes["layers"][r.key][1:], i)
                               for i in range(config.num_layers)])
              for r in layer_rules(config)}
    params = {r.key: convert(r, shapes[r.key], None) for r in TOP_RULES if r.key in shapes}
    params["layers"] = layers
    return params


def to_checkpoint(params: dict, config: ModelConfig, naming: str) -> dict[str, np.ndarray]:
    """{checkpoint name: torch-layout numpy tensor} for the canonical `params`."""
    shapes = param_shapes(config)
    out = {}
    for i in range(config.num_layers):
        for r in layer_rules(config):
            out[checkpoint_name(r, naming, i)] = r.to_torch(np.asarray(params["layers"][r.key][i]))
    for r in TOP_RULES:
        if r.key in shapes:
            out[checkpoint_name(r, naming)] = r.to_torch(np.asarray(params[r.key]))
    return out
