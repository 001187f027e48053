"""Known model shapes, for planning a run (`--dry_run`) without the checkpoint on this machine.

Each preset repeats its Hugging Face `config.json`'s shape fields (numerics default to float32;
a run config's `model.*` numerics replace them).
"""

from __future__ import annotations

from headjax.model.config import ModelConfig, RopeScaling

SMOLLM2_135M = ModelConfig(vocab_size=49152, d_model=576, num_layers=30, num_heads=9,
                           num_kv_heads=3, head_dim=64, ffn_dim=1536, rope_theta=100000.0,
                           norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=8192)

ARCHITECTURES: dict[str, ModelConfig] = {
    "smollm2-135m": SMOLLM2_135M,
    # meta-llama/Llama-3.2-1B
    "llama3.2-1b": ModelConfig(vocab_size=128256, d_model=2048, num_layers=16, num_heads=32,
                               num_kv_heads=8, head_dim=64, ffn_dim=8192, rope_theta=500000.0,
                               rope_scaling=RopeScaling(kind="llama3", factor=32.0,
                                                        original_max_position_embeddings=8192),
                               norm_eps=1e-5, tie_embeddings=True,
                               max_position_embeddings=131072),
    # meta-llama/Meta-Llama-3-8B
    "llama3-8b": ModelConfig(vocab_size=128256, d_model=4096, num_layers=32, num_heads=32,
                             num_kv_heads=8, head_dim=128, ffn_dim=14336, rope_theta=500000.0,
                             norm_eps=1e-5, max_position_embeddings=8192),
    # meta-llama/Meta-Llama-3-70B
    "llama3-70b": ModelConfig(vocab_size=128256, d_model=8192, num_layers=80, num_heads=64,
                              num_kv_heads=8, head_dim=128, ffn_dim=28672, rope_theta=500000.0,
                              norm_eps=1e-5, max_position_embeddings=8192),
}


def architecture(name: str) -> ModelConfig:
    """The preset `name`; an unknown name raises naming the known ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"model.architecture: {name!r} not in {tuple(ARCHITECTURES)}")
    return ARCHITECTURES[name]
