"""Head activation scores and pattern analyses, each a pure function on arrays."""

from headjax.heads.scores import (
    LOSS_KINDS,
    gate_gradients,
    head_scores,
    per_sample_head_scores,
    sample_weights,
)

__all__ = ["LOSS_KINDS", "gate_gradients", "head_scores", "per_sample_head_scores",
           "sample_weights"]
