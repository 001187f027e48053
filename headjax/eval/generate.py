"""Autoregressive generation with a key/value cache: prefill, jitted decode loop, text helper.

The cache is a pytree (`KVCache`):

    k, v      [layers, batch, max_len, kv_heads, head_dim]   keys (rotated) and values per slot
    segments  i32[batch, max_len]   1 for a real token, 0 for padding or a not yet written slot
    positions i32[batch]            RoPE position of the next token = real tokens seen so far
    length    i32[]                 slots written so far (the next token goes to slot `length`)

Prompts are left-padded `[batch, prompt_len]` with a boolean mask. A token's RoPE position is the
count of real tokens before it in its row, so a padded row computes exactly what the unpadded
prompt would; padding slots carry segment 0 and real queries never attend to them. Local
(sliding-window) layers keep every slot too; their mask only reads the last `sliding_window`.
Each layer is `headjax.model.block.decoder_block`, the same block as the training forward.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from headjax.model import block
from headjax.model.block import Gates
from headjax.model.config import ModelConfig
from headjax.model.transformer import Params, cast_params, embed_tokens, unembed
from headjax.parallel import DEFAULT_RULES, gather_rows, params_mesh, shard_rows
from headjax.parallel.rules import Rules


class KVCache(NamedTuple):
    """Decoding state; shapes in the module docstring."""

    k: Float[Array, "layers batch max_len kv_heads head_dim"]
    v: Float[Array, "layers batch max_len kv_heads head_dim"]
    segments: Int[Array, "batch max_len"]
    positions: Int[Array, " batch"]
    length: Int[Array, ""]


class GenerateOutput(NamedTuple):
    """tokens: i32[batch, max_new_tokens], `pad_token_id` after a row stopped.
    lengths: i32[batch] generated tokens per row, the stop token included (max_new_tokens when
    the row never stopped)."""

    tokens: Int[Array, "batch new"]
    lengths: Int[Array, " batch"]


def _extend(params: Params, tokens: Int[Array, "batch n"], segments: Int[Array, "batch n"],
            cache: KVCache, config: ModelConfig, gates: Gates | None
            ) -> tuple[Float[Array, "batch n d_model"], KVCache]:
    """Run `n` new tokens through every layer, writing their keys/values to slots
    `[length, length + n)`; they attend to everything already cached and causally to each other.
    Returns the final hidden states (before the final norm) and the extended cache."""
    batch, n = tokens.shape
    max_len = cache.segments.shape[1]
    params = cast_params(params, config)
    start = cache.length
    positions = cache.positions[:, None] + jnp.cumsum(segments, axis=1) - segments
    all_segments = jax.lax.dynamic_update_slice(cache.segments, segments, (0, start))
    q_slots = jnp.broadcast_to(start + jnp.arange(n, dtype=jnp.int32), (batch, n))
    k_slots = jnp.broadcast_to(jnp.arange(max_len, dtype=jnp.int32), (batch, max_len))
    context = block.layer_context(config, positions, q_slots, k_slots, segments, all_segments)

    def layer_step(x, scanned):
        layer, gate, spec, cached_k, cached_v = scanned
        x, out = block.decoder_block(layer, x, gate, spec, context, config,
                                     cache=(cached_k, cached_v, start))
        return x, (out.k, out.v)

    x = embed_tokens(params, tokens, config)
    scanned = (params["layers"], block.layer_gates(gates, batch, config), block.layer_spec(config),
               cache.k, cache.v)
    x, (new_k, new_v) = jax.lax.scan(layer_step, x, scanned)
    cache = KVCache(
        k=jax.lax.dynamic_update_slice(cache.k, new_k, (0, 0, start, 0, 0)),
        v=jax.lax.dynamic_update_slice(cache.v, new_v, (0, 0, start, 0, 0)),
        segments=all_segments,
        positions=cache.positions + segments.sum(axis=1),
        length=start + n,
    )
    return x, cache


def empty_cache(config: ModelConfig, batch: int, max_len: int) -> KVCache:
    """A cache with room for `max_len` tokens per row, nothing written."""
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    return KVCache(k=jnp.zeros(shape, config.dtype), v=jnp.zeros(shape, config.dtype),
                   segments=jnp.zeros((batch, max_len), jnp.int32),
                   positions=jnp.zeros((batch,), jnp.int32), length=jnp.zeros((), jnp.int32))


def prefill_hidden(params: Params, config: ModelConfig, prompts: Int[Array, "batch prompt"],
                   prompt_mask: Bool[Array, "batch prompt"], max_len: int, *,
                   gates: Gates | None = None
                   ) -> tuple[Float[Array, "batch prompt d_model"], KVCache]:
    """The last residual stream of every prompt slot (before the final norm) and the cache
    holding the prompts (`max_len` slots)."""
    cache = empty_cache(config, prompts.shape[0], max_len)
    return _extend(params, prompts, prompt_mask.astype(jnp.int32), cache, config, gates)


def prefill(params: Params, config: ModelConfig, prompts: Int[Array, "batch prompt"],
            prompt_mask: Bool[Array, "batch prompt"], max_len: int, *,
            gates: Gates | None = None) -> tuple[Float[Array, "batch prompt vocab"], KVCache]:
    """Logits f32 of every prompt slot (garbage at padding) and the cache holding the prompts."""
    x, cache = prefill_hidden(params, config, prompts, prompt_mask, max_len, gates=gates)
    return unembed(cast_params(params, config), x, config), cache


def decode_step(params: Params, config: ModelConfig, cache: KVCache,
                tokens: Int[Array, " batch"], *, gates: Gates | None = None
                ) -> tuple[Float[Array, "batch vocab"], KVCache]:
    """Append one real token per row; return the next-token logits f32 and the cache."""
    segments = jnp.ones((tokens.shape[0], 1), jnp.int32)
    x, cache = _extend(params, tokens[:, None], segments, cache, config, gates)
    return unembed(cast_params(params, config), x, config)[:, 0], cache


def _choose(logits: Float[Array, "batch vocab"], temperature, key, greedy: bool
            ) -> Int[Array, " batch"]:
    """Argmax (greedy) or a sample from softmax(logits / temperature)."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "stop_token_ids",
                                             "greedy", "pad_token_id"))
def _generate(params, prompts, prompt_mask, gates, temperature, rng, *, config, max_new_tokens,
              stop_token_ids, greedy, pad_token_id) -> GenerateOutput:
    batch, prompt_len = prompts.shape
    stop_ids = jnp.asarray(stop_token_ids or (-1,), jnp.int32)
    # Prompts are left-padded: only the last slot's logits are needed, so only it is projected
    # onto the vocabulary (`prompt` times fewer vocabulary FLOPs than `prefill`).
    x, cache = prefill_hidden(params, config, prompts, prompt_mask, prompt_len + max_new_tokens,
                              gates=gates)
    logits = unembed(cast_params(params, config), x[:, -1:], config)[:, 0]
    first = _choose(logits, temperature, jax.random.fold_in(rng, 0), greedy)
    out = jnp.full((batch, max_new_tokens), pad_token_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, stop_ids)
    lengths = jnp.ones((batch,), jnp.int32)

    def keep_going(state):
        i, _, done, _, _ = state
        return (i < max_new_tokens) & ~jnp.all(done)

    def step(state):
        i, out, done, lengths, cache = state
        logits, cache = decode_step(params, config, cache, out[:, i - 1], gates=gates)
        token = _choose(logits, temperature, jax.random.fold_in(rng, i), greedy)
        token = jnp.where(done, pad_token_id, token)
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
        lengths = lengths + (~done).astype(jnp.int32)
        return i + 1, out, done | jnp.isin(token, stop_ids), lengths, cache

    _, out, _, lengths, _ = jax.lax.while_loop(
        keep_going, step, (jnp.asarray(1, jnp.int32), out, done, lengths, cache))
    return GenerateOutput(out, lengths)


def generate(params: Params, config: ModelConfig, prompts: Int[Array, "batch prompt"],
             prompt_mask: Bool[Array, "batch prompt"], *, max_new_tokens: int,
             stop_token_ids: Sequence[int] = (), temperature: float = 0.0,
             rng: jax.Array | None = None, pad_token_id: int = 0,
             gates: Gates | None = None) -> GenerateOutput:
    """Continue left-padded `prompts` by up to `max_new_tokens` tokens each.

    Greedy when `temperature == 0`, else sampled from softmax(logits / temperature) with `rng`
    (required). A row stops after emitting any of `stop_token_ids` and emits `pad_token_id`
    afterwards. `gates` (`[layers, heads]` or `[batch, layers, heads]`) scale each head's output
    as in `forward`, so generation can run with heads ablated. Compiles once per (batch,
    prompt_len, max_new_tokens) shape and sampling mode.
    """
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = jnp.asarray(prompt_mask, bool)
    if prompts.ndim != 2 or prompt_mask.shape != prompts.shape:
        raise ValueError(f"generate: prompts {prompts.shape} and prompt_mask {prompt_mask.shape} "
                         "must both be [batch, prompt_len]")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
    if temperature > 0 and rng is None:
        raise ValueError("generate: sampling (temperature > 0) needs an rng key")
    if not isinstance(prompt_mask, jax.core.Tracer) and not bool(jnp.all(prompt_mask[:, -1])):
        raise ValueError("generate: prompts must be left-padded (prompt_mask[:, -1] all true)")
    if prompts.shape[1] + max_new_tokens > config.max_position_embeddings:
        raise ValueError(f"generate: prompt_len {prompts.shape[1]} + max_new_tokens "
                         f"{max_new_tokens} exceeds max_position_embeddings "
                         f"{config.max_position_embeddings}")
    return _generate(params, prompts, prompt_mask, gates, jnp.asarray(temperature, jnp.float32),
                     jax.random.key(0) if rng is None else rng, config=config,
                     max_new_tokens=max_new_tokens,
                     stop_token_ids=tuple(int(t) for t in stop_token_ids),
                     greedy=temperature == 0, pad_token_id=int(pad_token_id))


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Token lists as left-padded i32[batch, longest] and their bool mask."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("left_pad: every sequence needs at least one token")
    width = max(len(s) for s in sequences)
    tokens = np.full((len(sequences), width), pad_token_id, np.int32)
    mask = np.zeros((len(sequences), width), bool)
    for row, seq in enumerate(sequences):
        tokens[row, width - len(seq):] = seq
        mask[row, width - len(seq):] = True
    return tokens, mask


def generate_text(params: Params, config: ModelConfig, tokenizer, prompts: Sequence[str], *,
                  max_new_tokens: int, temperature: float = 0.0, rng: jax.Array | None = None,
                  stop_token_ids: Sequence[int] | None = None, gates: Gates | None = None,
                  rules: Rules = DEFAULT_RULES) -> list[str]:
    """Completions of `prompts` (already chat-templated by the caller), decoded without the
    stop token. Stops at `tokenizer.stop_token_ids` unless `stop_token_ids` is given.

    When `params` are sharded over a mesh, the prompts (and per-row `gates`) are sharded over its
    `batch` rule axes of `rules` (`headjax.parallel.shard_rows`, padded with copies of the last
    prompt whose completions are dropped), so each device generates its rows only.
    """
    stops = tuple(tokenizer.stop_token_ids if stop_token_ids is None else stop_token_ids)
    tokens, mask = left_pad([tokenizer.encode(p) for p in prompts], tokenizer.pad_token_id)
    batch = {"tokens": tokens, "mask": mask}
    if gates is not None and np.ndim(gates) == 3:
        batch["gates"] = np.asarray(gates)
    mesh = params_mesh(params)
    if mesh is not None:
        batch = shard_rows(batch, mesh, rules)
    out = generate(params, config, batch["tokens"], batch["mask"], max_new_tokens=max_new_tokens,
                   stop_token_ids=stops, temperature=temperature, rng=rng,
                   pad_token_id=tokenizer.pad_token_id, gates=batch.get("gates", gates))
    out = gather_rows(out, len(prompts))
    completions = []
    for row, length in zip(out.tokens, out.lengths, strict=True):
        ids = row[:length].tolist()
        if ids and ids[-1] in stops:
            ids = ids[:-1]
        completions.append(tokenizer.decode(ids))
    return completions
