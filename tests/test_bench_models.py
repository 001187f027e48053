"""The benchmarked PyTorch model computes headjax's function: transformers' LlamaForCausalLM built
from io/export.py's config and io/layout.py's weights gives headjax's logits (tied and untied
embeddings)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from headjax.app.bench.models import headjax_params, synthetic_batch, torch_model
from headjax.model import forward, tiny_config


@pytest.mark.parametrize("tie", [True, False])
def test_torch_model_matches_headjax(tie):
    torch = pytest.importorskip("torch")
    config = tiny_config(vocab_size=64, tie_embeddings=tie)
    params = headjax_params(config, seed=1)
    tokens = synthetic_batch(config, 2, 12)["tokens"]
    ours = np.asarray(forward(params, jnp.asarray(tokens), config).logits)
    for attention in ("eager", "sdpa"):
        with torch.no_grad():
            theirs = torch_model(params, config, attention)(torch.from_numpy(tokens)).logits
        np.testing.assert_allclose(theirs.numpy(), ours, atol=1e-4, rtol=1e-4)
