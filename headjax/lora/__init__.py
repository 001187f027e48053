"""LoRA and head-LoRA adapters: unmerged in training, merged for evaluation and export.

The exports (a PEFT adapter folder, a merged Hugging Face checkpoint) are `headjax.lora.export`,
kept out of this package's namespace so that training (which imports `headjax.lora`) does not
load the file formats of `headjax.io`.
"""

from headjax.lora.adapters import (
    RANK_AXIS,
    TARGETS,
    LoraParams,
    LoraSpec,
    adapter_axes,
    adapter_masks,
    adapter_shapes,
    delta,
    init_adapters,
    layer_adapters,
    lora_spec,
    masked,
    merge,
    model_params,
    params_axes,
    restored_model_params,
    trainable,
    trainable_count,
    with_rank_rule,
    with_trainable,
)

__all__ = [
    "RANK_AXIS", "TARGETS", "LoraParams", "LoraSpec", "adapter_axes", "adapter_masks",
    "adapter_shapes", "delta", "init_adapters", "layer_adapters", "lora_spec", "masked", "merge",
    "model_params", "params_axes", "restored_model_params", "trainable",
    "trainable_count", "with_rank_rule", "with_trainable",
]
