"""Pure-function decoder-only transformer with per-head gates (Llama, Qwen, Mistral, Gemma)."""

from headjax.model.config import ModelConfig, RopeScaling, tiny_config
from headjax.model.loss import (
    Batch,
    answer_token_losses,
    batch_token_losses,
    loss,
    model_inputs,
    per_sample_loss,
    vocab_cross_entropy,
)
from headjax.model.transformer import ForwardOutput, Params, forward, init, param_axes, param_shapes

__all__ = [
    "Batch", "ForwardOutput", "ModelConfig", "Params", "RopeScaling", "answer_token_losses",
    "batch_token_losses", "forward", "init", "loss", "model_inputs", "param_axes",
    "param_shapes", "per_sample_loss", "tiny_config", "vocab_cross_entropy",
]
