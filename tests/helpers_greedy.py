"""Test helper: headjax's logits and greedy continuation by full recomputation (no KV cache),
the reference the real-model tests hold against transformers, and the logits comparison."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from headjax.model import forward


@functools.partial(jax.jit, static_argnums=2)
def logits(params, tokens, config):
    """f32[batch, seq, vocab] of `forward`, compiled once per shape."""
    return forward(params, tokens, config).logits


def greedy_full_recompute(params, config, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy by full recompute, on one fixed-length buffer (causal: the tail does not matter)."""
    buffer = np.zeros((1, len(prompt) + new_tokens), np.int32)
    buffer[0, :len(prompt)] = prompt
    for t in range(len(prompt), buffer.shape[1]):
        step_logits = logits(params, jnp.asarray(buffer), config)
        buffer[0, t] = int(jnp.argmax(step_logits[0, t - 1]))
    return buffer[0, len(prompt):].tolist()


def max_logits_difference(params, config, torch_model, tokens: list[list[int]]) -> float:
    """Largest |headjax logits - transformers logits| over `tokens` `[batch, seq]`."""
    import torch

    with torch.no_grad():
        reference = torch_model(torch.tensor(tokens)).logits.numpy()
    ours = np.asarray(logits(params, jnp.asarray(tokens), config))
    return float(np.abs(ours - reference).max())
