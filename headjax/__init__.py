"""headjax: see and steer what supervised fine-tuning does to attention heads, in JAX."""

from headjax.model import ModelConfig, forward, init, loss, per_sample_loss

__all__ = ["ModelConfig", "forward", "init", "load_pretrained", "loss", "per_sample_loss"]


def load_pretrained(name_or_path: str, **kwargs):
    """(params, config, tokenizer) from a known name, a HF checkpoint directory or a GGUF file.

    See `headjax.io.pretrained.load_pretrained`.
    """
    from headjax.io.pretrained import load_pretrained as _load

    return _load(name_or_path, **kwargs)
