"""Low-rank adapters applied inside the projections: y = x W + s * (dropout(x) a) b.

Every projection of the block (q, k, v in `attention.project_qkv`, o in `attention.gated_output`,
gate, up, down in `block.mlp`) is one `adapted(x, weight, adapter, equation)` call, where
`equation` is the projection's einsum (`"bsd,dhk->bshk"` for q, ...), computed as one 2-D matrix
product (`project`). Without an adapter that call is the plain projection. With one, of rank r,

    a  [*in, r]     (the weight's input dims, then the rank)
    b  [r, *out]    (the rank, then the weight's output dims)

adds s * (drop(x) a) b, never forming the `[*in, *out]` product a b: the backward pass then
yields dL/da and dL/db through `[..., r]` activations, and a frozen W gets no weight gradient.

`Adapters` carries the adapters of the stacked layers through the layer scan (leaves with a
leading `layers` axis: weights and per-layer dropout keys), the scale s and dropout rate static.
`headjax.lora.layer_adapters` builds it from a `LoraParams` (head-LoRA masks applied).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Float, UInt

RANK_LETTER = "z"  # the rank's einsum letter (no projection equation uses it)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# How many leading dims of each (per-layer) projection weight its input contracts: q/k/v
# [d_model, heads, head_dim], gate/up [d_model, ffn] and down [ffn, d_model] take 1; o_proj
# [heads, head_dim, d_model] takes 2. An adapter's a is `[*in, r]`, its b `[r, *out]`.
INPUT_DIMS = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2, "gate_proj": 1, "up_proj": 1,
              "down_proj": 1}


class Adapter(NamedTuple):
    """One projection's adapter in one layer: a `[*in, r]`, b `[r, *out]`, scale s = alpha / r,
    dropout rate on the adapter input, and its dropout key data (u32[2], None: no dropout)."""

    a: Float[Array, "..."]
    b: Float[Array, "..."]
    scale: float
    dropout: float
    rng: UInt[Array, "2"] | None


@struct.dataclass
class Adapters:
    """Adapters of every layer (or, inside the scan, of one layer).

    weights: `{projection key: {"a": [layers, *in, r], "b": [layers, r, *out]}}` (keys as in the
      params, e.g. "q_proj"); projections absent here are not adapted.
    rng: u32 `[layers, 2]` dropout key data, or None (no dropout: evaluation, pattern scoring).
    scale: s = alpha / r; dropout: rate in [0, 1) on the adapter input (static).
    """

    weights: Any
    rng: Any = None
    scale: float = struct.field(pytree_node=False, default=1.0)
    dropout: float = struct.field(pytree_node=False, default=0.0)

    def of(self, key: str) -> Adapter | None:
        """This (one layer's) projection `key`'s `Adapter`, or None when it is not adapted.
        Each projection draws its own dropout mask (the layer's key folded with its name)."""
        if key not in self.weights:
            return None
        rng = None
        if self.rng is not None and self.dropout > 0:
            rng = jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(self.rng),
                                                         PROJECTIONS.index(key)))
        return Adapter(self.weights[key]["a"], self.weights[key]["b"], self.scale,
                       self.dropout, rng)


def adapter_of(adapters: Adapters | None, key: str) -> Adapter | None:
    """`adapters.of(key)`, or None without adapters."""
    return None if adapters is None else adapters.of(key)


def dropout(x: Float[Array, "..."], rate: float, rng: UInt[Array, "2"] | None
            ) -> Float[Array, "..."]:
    """Inverted dropout: each entry of `x` (each token's own mask) kept with probability
    1 - rate and divided by it, else 0; `x` itself when `rng` is None or rate is 0."""
    if rng is None or rate == 0:
        return x
    keep = jax.random.bernoulli(jax.random.wrap_key_data(rng), 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def _low_rank_equations(equation: str) -> tuple[str, str]:
    """("x,a->xa", "xa,b->y") einsums of the adapter path of projection `equation` ("x,w->y")."""
    inputs, y = equation.split("->")
    x, w = inputs.split(",")
    w_in = "".join(c for c in w if c in x)
    w_out = "".join(c for c in w if c not in x)
    batch = "".join(c for c in x if c not in w)
    r = RANK_LETTER
    return f"{x},{w_in}{r}->{batch}{r}", f"{batch}{r},{r}{w_out}->{y}"


def project(x: Float[Array, "..."], weight: Float[Array, "..."], equation: str
            ) -> Float[Array, "..."]:
    """`einsum(equation, x, weight)` as one 2-D matrix product: x's leading (token) dims and the
    contracted dims each flattened, `[tokens, in] @ [in, out]`, then reshaped to `[*tokens, *out]`.

    The same numbers as the einsum, but a backward pass whose weight gradient contracts a single
    token dim: XLA's CPU backend otherwise transposes `[batch, seq, out]` cotangents into a copy
    before each weight-gradient product (the largest cost of a CPU step in a profile).
    `equation` is "x,w->y" with x = tokens + in, w = in + out and y = tokens + out.
    """
    inputs, _ = equation.split("->")
    x_letters, w_letters = inputs.split(",")
    n_in = sum(c in x_letters for c in w_letters)
    tokens, inner = x.shape[:x.ndim - n_in], x.shape[x.ndim - n_in:]
    out = weight.shape[n_in:]
    with jax.named_scope(equation):  # names the product in profiles (HLO op_name)
        y = jnp.dot(x.reshape(-1, math.prod(inner)), weight.reshape(math.prod(inner), -1))
    return y.reshape(*tokens, *out)


def adapted(x: Float[Array, "..."], weight: Float[Array, "..."], adapter: Adapter | None,
            equation: str) -> Float[Array, "..."]:
    """The projection `project(x, weight, equation)`, plus s * (dropout(x) a) b with an adapter.

    `equation` contracts x's trailing dims with the weight's leading (`in`) dims, e.g.
    `"bsd,dhk->bshk"`; a is `[*in, r]`, b `[r, *out]`, both cast to x's dtype. Without an
    adapter the result is the plain projection, bit for bit.
    """
    y = project(x, weight, equation)
    if adapter is None:
        return y
    down, up = _low_rank_equations(equation)
    h = jnp.einsum(down, dropout(x, adapter.dropout, adapter.rng), adapter.a.astype(x.dtype))
    h = h * jnp.asarray(adapter.scale, h.dtype)
    return y + jnp.einsum(up, h, adapter.b.astype(x.dtype))
