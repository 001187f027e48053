"""LoRA and head-LoRA adapters: unmerged in training, merged for evaluation and export; PEFT."""

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
from headjax.lora.export import export_merged_hf, export_peft, peft_config, peft_tensors

__all__ = [
    "RANK_AXIS", "TARGETS", "LoraParams", "LoraSpec", "adapter_axes", "adapter_masks",
    "adapter_shapes", "delta", "export_merged_hf", "export_peft", "init_adapters", "layer_adapters",
    "lora_spec", "masked", "merge", "model_params", "params_axes", "peft_config", "peft_tensors",
    "restored_model_params", "trainable",
    "trainable_count", "with_rank_rule", "with_trainable",
]
