"""LoRA exports against peft and transformers (PyTorch), the independent reference.

The PEFT folder, loaded by `peft.PeftModel.from_pretrained` onto the transformers base model
exported by headjax, computes headjax's merged-model logits; peft runs the adapters as a separate
path (x W^T + s B A x), so this also checks the merge. The merged Hugging Face checkpoint gives
the same logits; head scores of the peft model (sum Gamma dL/dGamma from its attention maps) equal
headjax's gate gradients on the merged weights; a head-LoRA adapter merged by peft leaves the
other heads' rows of q_proj and columns of o_proj as they were.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from test_parity_torch import _torch_gamma_scores  # noqa: E402

from headjax.heads.scores import gate_gradients  # noqa: E402
from headjax.io import export_hf  # noqa: E402
from headjax.lora import LoraParams, init_adapters, lora_spec, model_params  # noqa: E402
from headjax.lora.export import export_merged_hf, export_peft  # noqa: E402
from headjax.model import forward, init, tiny_config  # noqa: E402

ALL = ("q", "k", "v", "o", "gate", "up", "down")
LENGTHS = (11, 7)
forward_jit = jax.jit(forward, static_argnums=2)
gate_gradients_jit = jax.jit(gate_gradients, static_argnums=2)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(config, random base params, the base exported as a Hugging Face directory)."""
    config = tiny_config()
    params = init(jax.random.key(0), config, std=0.2)
    directory = tmp_path_factory.mktemp("lora_base")
    export_hf(str(directory), params, config)
    return config, params, str(directory)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, 128, (2, 11)).astype(np.int32)
    mask = (np.arange(11)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
    loss_mask = (mask * (np.arange(11)[None] >= np.array(LENGTHS)[:, None] - 4))
    return dict(tokens=tokens * mask, segment_ids=mask, loss_mask=loss_mask.astype(np.float32))


def _lora(config, params, heads=None, targets=ALL):
    """A LoraParams with nonzero a and b (b starts at zero in `init_adapters`; here b is
    nonzero on every head too, so the head-LoRA masks of merge and export are what count)."""
    spec = lora_spec(4, 8.0, targets, heads)
    adapters = init_adapters(jax.random.key(1), config, spec)
    b_keys = jax.random.split(jax.random.key(2), len(spec.keys))
    adapters = {key: {"a": ab["a"], "b": 0.2 * jax.random.normal(k, ab["b"].shape)}
                for k, (key, ab) in zip(b_keys, adapters.items(), strict=True)}
    return LoraParams(params, adapters, spec)


def _torch_model(directory, adapter=None):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, attn_implementation="eager", dtype=torch.float32).eval()
    return model if adapter is None else peft.PeftModel.from_pretrained(model, adapter).eval()


def _torch_logits(model, batch) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(batch["tokens"], dtype=torch.long),
                     attention_mask=torch.tensor(batch["segment_ids"])).logits.numpy()


def _logits(params, config, batch) -> np.ndarray:
    return np.asarray(forward_jit(params, jnp.asarray(batch["tokens"]), config,
                                  segment_ids=jnp.asarray(batch["segment_ids"])).logits)


def test_peft_folder_and_merged_checkpoint_give_headjax_logits(base, batch, tmp_path):
    config, params, base_dir = base
    lora = _lora(config, params)
    export_peft(str(tmp_path / "adapter"), lora, base_model=base_dir)
    export_merged_hf(str(tmp_path / "merged"), lora, config)
    real = batch["segment_ids"].astype(bool)
    ours = _logits(model_params(lora), config, batch)
    with_peft = _torch_logits(_torch_model(base_dir, str(tmp_path / "adapter")), batch)
    merged = _torch_logits(_torch_model(str(tmp_path / "merged")), batch)
    plain = _torch_logits(_torch_model(base_dir), batch)
    assert np.abs(with_peft - ours)[real].max() < 1e-4
    assert np.abs(merged - ours)[real].max() < 1e-4
    assert np.abs(plain - ours)[real].max() > 0.1  # the adapters do change the model


def test_head_scores_of_the_peft_model_equal_the_merged_models(base, batch, tmp_path):
    config, params, base_dir = base
    lora = _lora(config, params)
    export_peft(str(tmp_path / "adapter"), lora)
    model = _torch_model(base_dir, str(tmp_path / "adapter"))
    for p in model.parameters():  # peft loads for inference (frozen); Gamma needs a graph
        p.requires_grad_(True)
    reference = _torch_gamma_scores(model, batch)
    arrays = {k: jnp.asarray(v) for k, v in batch.items()}
    ours = np.asarray(gate_gradients_jit(model_params(lora), arrays, config))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)
    base_scores = np.asarray(gate_gradients_jit(params, arrays, config))
    assert np.abs(base_scores - reference).max() > 1e-3


def test_head_lora_adapter_merged_by_peft_leaves_other_heads_alone(base, batch, tmp_path):
    config, params, base_dir = base
    heads = np.zeros((config.num_layers, config.num_heads), bool)
    heads[0, 3] = heads[1, 0] = True
    lora = _lora(config, params, heads, targets=("q", "k", "v", "o"))
    export_peft(str(tmp_path / "adapter"), lora)
    model = _torch_model(base_dir, str(tmp_path / "adapter"))
    real = batch["segment_ids"].astype(bool)
    assert np.abs(_torch_logits(model, batch) - _logits(model_params(lora), config, batch)
                  )[real].max() < 1e-4
    merged, plain = model.merge_and_unload(), _torch_model(base_dir)
    hd = config.head_dim
    for layer in range(config.num_layers):
        new, old = merged.model.layers[layer].self_attn, plain.model.layers[layer].self_attn
        for h in range(config.num_heads):
            rows = slice(h * hd, (h + 1) * hd)
            g = h // config.group_size
            group = slice(g * hd, (g + 1) * hd)
            in_group = heads[layer, g * config.group_size:(g + 1) * config.group_size].any()
            for name, index, moved in (("q_proj", (rows,), heads[layer, h]),
                                       ("o_proj", (slice(None), rows), heads[layer, h]),
                                       ("k_proj", (group,), in_group),
                                       ("v_proj", (group,), in_group)):
                before = getattr(old, name).weight[index].detach().numpy()
                after = getattr(new, name).weight[index].detach().numpy()
                if moved:
                    assert np.abs(after - before).max() > 1e-4, (layer, h, name)
                else:
                    np.testing.assert_array_equal(after, before, err_msg=f"{layer} {h} {name}")
