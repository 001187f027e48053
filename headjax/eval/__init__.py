"""Evaluation: generation with a key/value cache."""

from headjax.eval.generate import (
    GenerateOutput,
    KVCache,
    decode_step,
    empty_cache,
    generate,
    generate_text,
    left_pad,
    prefill,
)

__all__ = ["GenerateOutput", "KVCache", "decode_step", "empty_cache", "generate",
           "generate_text", "left_pad", "prefill"]
