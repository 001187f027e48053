"""Export a LoRA model: a merged Hugging Face checkpoint, and a PEFT adapter folder.

The PEFT folder holds `adapter_config.json` (a peft `LoraConfig`: r, lora_alpha, target_modules,
...) and `adapter_model.safetensors` with the tensors named as peft saves them for a
`LlamaForCausalLM` / `Qwen2ForCausalLM` / `MistralForCausalLM` (adapter name stripped):

    base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight   [r, in_features]
    base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight   [out_features, r]

so `peft.PeftModel.from_pretrained(transformers_base_model, folder)` rebuilds the model. Our
`a [*in, r]` is lora_A transposed, `b [r, *out]` is lora_B transposed (in and out flattened as
torch flattens them, see `headjax.io.layout`). Head-LoRA adapters are written with their masks
applied (zero rows/columns of the other heads), which is an ordinary LoRA adapter to peft.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from safetensors.numpy import save_file

from headjax.io.export import export_hf
from headjax.io.layout import LAYER_RULES
from headjax.io.output import staged_directory
from headjax.lora.adapters import LoraParams, adapter_masks

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
_RULES = {rule.key: rule for rule in LAYER_RULES}


def peft_tensors(params: LoraParams) -> dict[str, np.ndarray]:
    """{peft tensor name: torch-layout float32 numpy array} of the (masked) adapters."""
    spec = params.spec
    adapters = jax.device_get(params.adapters)
    masks = adapter_masks(spec, jax.tree.map(lambda x: x.shape, adapters))
    out = {}
    for key in spec.keys:
        a = np.asarray(adapters[key]["a"], np.float32)
        b = np.asarray(adapters[key]["b"], np.float32)
        if masks is not None:
            a, b = a * masks[key]["a"], b * masks[key]["b"]
        module = _RULES[key].hf_name.removesuffix(".weight")
        for i in range(a.shape[0]):
            name = PREFIX + module.format(i=i)
            out[f"{name}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, spec.rank).T)
            out[f"{name}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(spec.rank, -1).T)
    return out


def peft_config(params: LoraParams, base_model: str = "") -> dict:
    """The `adapter_config.json` contents (a peft `LoraConfig`) of `params`."""
    spec = params.spec
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
        "target_modules": sorted(spec.keys), "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "use_dora": False, "init_lora_weights": True,
        "inference_mode": True, "modules_to_save": None,
    }


def export_peft(path: str, params: LoraParams, *, base_model: str = "",
                overwrite: bool = False) -> None:
    """Write the PEFT adapter folder `path`, atomically (a temporary sibling renamed into place).

    base_model: recorded as `base_model_name_or_path` (e.g. the Hugging Face directory the
      adapter belongs on); peft loads the adapter onto whatever base model it is given.
    overwrite: replace an existing non-empty `path` (otherwise a FileExistsError).
    """
    with staged_directory(path, overwrite=overwrite) as staging:
        save_file({name: np.ascontiguousarray(t) for name, t in peft_tensors(params).items()},
                  os.path.join(staging, WEIGHTS_FILE), metadata={"format": "pt"})
        with open(os.path.join(staging, CONFIG_FILE), "w") as f:
            json.dump(peft_config(params, base_model), f, indent=2)


def export_merged_hf(path: str, params: LoraParams, config, tokenizer=None, **kwargs) -> None:
    """Write the merged model W + (alpha / r) a @ b as a Hugging Face checkpoint directory
    (`headjax.io.export.export_hf`)."""
    export_hf(path, jax.device_get(params.merged()), config, tokenizer, **kwargs)
