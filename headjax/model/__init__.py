"""Pure-function decoder-only transformer with per-head gates (Llama, Qwen, Mistral, Gemma)."""

from headjax.model.config import ModelConfig, RopeScaling, tiny_config
from headjax.model.loss import batch_token_losses, loss, per_sample_loss, token_losses
from headjax.model.transformer import ForwardOutput, Params, forward, init, param_axes, param_shapes

__all__ = [
    "ForwardOutput", "ModelConfig", "Params", "RopeScaling", "batch_token_losses", "forward",
    "init", "loss", "param_axes", "param_shapes", "per_sample_loss", "tiny_config",
    "token_losses",
]
