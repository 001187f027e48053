"""The benchmarked model: SmolLM2-135M's architecture in headjax and in transformers PyTorch.

Both start from random weights (timing does not depend on the values); the PyTorch model is
built from the Hugging Face config and weight layout of `headjax.io.export` with headjax's weights
loaded, so that both compute the same function.
"""

from __future__ import annotations

import jax
import numpy as np

from headjax.io import export, layout
from headjax.model.config import ModelConfig
from headjax.model.presets import SMOLLM2_135M
from headjax.model.transformer import init


def headjax_params(config: ModelConfig = SMOLLM2_135M, seed: int = 0) -> dict:
    """Random headjax parameters for `config`."""
    return init(jax.random.key(seed), config)


def torch_model(params: dict, config: ModelConfig, attn_implementation: str):
    """A transformers `LlamaForCausalLM` (fp32, train mode off) holding `params`."""
    import torch
    import transformers

    hf_config = export.hf_config(config, "llama")
    hf_config._attn_implementation = attn_implementation
    model = transformers.LlamaForCausalLM(hf_config).to(torch.float32).eval()
    tensors = layout.to_checkpoint(params, config, "hf")
    state = {name: torch.from_numpy(np.array(t, dtype=np.float32)) for name, t in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"torch_model: missing {missing}, unexpected {unexpected}")
    return model


def synthetic_batch(config: ModelConfig, batch: int, seq: int, seed: int = 0) -> dict:
    """Random tokens `[batch, seq]`; the second half of each row is the answer (loss_mask 1)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, (batch, seq), dtype=np.int32)
    loss_mask = np.zeros((batch, seq), np.float32)
    loss_mask[:, seq // 2:] = 1.0
    return {"tokens": tokens, "loss_mask": loss_mask}
