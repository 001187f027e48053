"""The benchmarked model: SmolLM2-135M's architecture in headjax and in transformers PyTorch.

Both start from random weights (timing does not depend on the values); the PyTorch model gets
headjax's weights copied in so that both compute the same function.
"""

from __future__ import annotations

import jax
import numpy as np

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

    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model,
        intermediate_size=config.ffn_dim, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim, rope_theta=config.rope_theta, rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tie_embeddings,
        max_position_embeddings=config.max_position_embeddings)
    hf_config._attn_implementation = attn_implementation
    model = transformers.LlamaForCausalLM(hf_config).to(torch.float32).eval()
    layers = jax.tree.map(np.asarray, params["layers"])
    as_torch = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(as_torch(params["embed"]))
        model.model.norm.weight.copy_(as_torch(params["final_norm"]))
        for i, block in enumerate(model.model.layers):
            attn, mlp = block.self_attn, block.mlp
            flat_in = lambda name, i=i: layers[name][i].reshape(config.d_model, -1).T
            attn.q_proj.weight.copy_(as_torch(flat_in("q_proj")))
            attn.k_proj.weight.copy_(as_torch(flat_in("k_proj")))
            attn.v_proj.weight.copy_(as_torch(flat_in("v_proj")))
            attn.o_proj.weight.copy_(as_torch(layers["o_proj"][i].reshape(-1, config.d_model).T))
            mlp.gate_proj.weight.copy_(as_torch(layers["gate_proj"][i].T))
            mlp.up_proj.weight.copy_(as_torch(layers["up_proj"][i].T))
            mlp.down_proj.weight.copy_(as_torch(layers["down_proj"][i].T))
            block.input_layernorm.weight.copy_(as_torch(layers["attn_norm"][i]))
            block.post_attention_layernorm.weight.copy_(as_torch(layers["mlp_norm"][i]))
    return model


def synthetic_batch(config: ModelConfig, batch: int, seq: int, seed: int = 0) -> dict:
    """Random tokens `[batch, seq]`; the second half of each row is the answer (loss_mask 1)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, (batch, seq), dtype=np.int32)
    loss_mask = np.zeros((batch, seq), np.float32)
    loss_mask[:, seq // 2:] = 1.0
    return {"tokens": tokens, "loss_mask": loss_mask}
