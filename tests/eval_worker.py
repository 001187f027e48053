"""Subprocess job for the sharded evaluation and probe tests (8 simulated host devices; the
device count must be set before JAX starts).

  python tests/eval_worker.py mesh OUT.json

On meshes data=2 x fsdp=2 x tensor=2 and fsdp=8, with the tiny random model's params sharded by
the default rules, writes: greedy tokens and texts of 5 prompts (a batch both meshes must pad)
and of 8, sharded and on one device; activation patterns of probe batches of 6 and 8 rows for
both loss kinds, sharded and on one device; the PartitionSpec the compiled generation and score
programs take their batch with; the batch shardings of the dry run's programs; and the
largest difference of the loss and its gradients with `answer_positions = 8` (the branch that
projects answer positions only) between the sharded step and one device, and the collectives
of that step compiled for data parallelism.

  python tests/eval_worker.py multiprocess OUT.json PORT PROCESS_ID NUM_PROCESSES

One process of a `jax.distributed` run (1 CPU device each, mesh data=NUM_PROCESSES, params
sharded): `multiprocess_results` (texts of 3 prompts, probe patterns of 5 + 8 rows).
"""

from __future__ import annotations

import json
import sys

import numpy as np

MESHES = {"data2_fsdp2_tensor2": {"data": 2, "fsdp": 2, "tensor": 2},
          "fsdp8": {"data": 1, "fsdp": -1, "tensor": 1}}
PROMPTS = ["what is 2 + 3 ?", "spell cat backward", "how many legs", "a", "sort these words",
           "give only the final answer", "yes or no ?", "calculate 7 * 8"]


def sharded_params(params, config, sizes):
    import jax

    from headjax.model import param_axes, param_shapes
    from headjax.parallel import DEFAULT_RULES, make_mesh, param_shardings

    mesh = make_mesh(sizes)
    shardings = param_shardings(param_axes(config), param_shapes(config), DEFAULT_RULES, mesh)
    return jax.device_put(params, shardings), mesh


def probe_batch(rows: int, seed: int) -> dict[str, np.ndarray]:
    """`rows` random 24-token rows, answers on their last 6 real tokens; the last row is padding
    (segment 0, no answer) and row 1 is 16 tokens long."""
    rng = np.random.default_rng(seed)
    seq = 24
    tokens = rng.integers(3, 128, (rows, seq), dtype=np.int32)
    segments = np.ones((rows, seq), np.int32)
    segments[1, 16:] = 0
    segments[-1] = 0
    loss_mask = np.zeros((rows, seq), np.float32)
    for row in range(rows):
        real = int(segments[row].sum())
        loss_mask[row, max(real - 6, 0):real] = 1.0
    positions = np.where(segments > 0, np.arange(seq, dtype=np.int32), 0)
    return {"tokens": tokens, "loss_mask": loss_mask, "segment_ids": segments,
            "positions": positions.astype(np.int32)}


def generation(params, config, sharded, mesh, tokenizer) -> dict:
    from headjax.eval import generate, generate_text, left_pad
    from headjax.parallel import DEFAULT_RULES, gather_rows, shard_rows

    out = {}
    for rows in (5, 8):
        prompts = PROMPTS[:rows]
        tokens, mask = left_pad([tokenizer.encode(p) for p in prompts], tokenizer.pad_token_id)
        reference = generate(params, config, tokens, mask, max_new_tokens=10)
        placed = shard_rows({"tokens": tokens, "mask": mask}, mesh, DEFAULT_RULES)
        got = gather_rows(generate(sharded, config, placed["tokens"], placed["mask"],
                                   max_new_tokens=10), rows)
        out[f"tokens_{rows}"] = [np.asarray(reference.tokens).tolist(), got.tokens.tolist()]
        out[f"lengths_{rows}"] = [np.asarray(reference.lengths).tolist(), got.lengths.tolist()]
        out[f"text_{rows}"] = [
            generate_text(params, config, tokenizer, prompts, max_new_tokens=10,
                          stop_token_ids=()),
            generate_text(sharded, config, tokenizer, prompts, max_new_tokens=10,
                          stop_token_ids=())]
        out[f"prompt_spec_{rows}"] = str(placed["tokens"].sharding.spec)
    return out


def patterns(params, config, sharded) -> dict:
    from headjax.heads import activation_pattern

    out = {}
    for loss_kind in ("sample_mean", "batch_mean"):
        batches = [probe_batch(8, 0), probe_batch(6, 1)]
        reference = activation_pattern(params, config, batches, loss_kind=loss_kind,
                                       progress=False)
        got = activation_pattern(sharded, config, batches, loss_kind=loss_kind, progress=False)
        out[loss_kind] = {
            "samples": [len(reference.per_sample), len(got.per_sample)],
            "per_sample": float(np.abs(reference.per_sample - got.per_sample).max()),
            "mean": float(np.abs(reference.mean - got.mean).max()),
            "scale": float(np.abs(reference.per_sample).max())}
    return out


def compiled_specs(config, sharded, mesh, tokenizer) -> dict:
    """PartitionSpecs the compiled programs take their batch with (`input_shardings`)."""
    import jax

    from headjax.eval.generate import _generate, left_pad
    from headjax.heads.patterns import batch_scores_program
    from headjax.parallel import DEFAULT_RULES, frozen_rules, shard_rows

    batch = shard_rows(probe_batch(6, 1), mesh, DEFAULT_RULES, zero=("loss_mask",))
    step = batch_scores_program(config, "sample_mean", mesh, frozen_rules(DEFAULT_RULES))
    scores = step.lower(sharded, batch).compile()
    tokens, mask = left_pad([tokenizer.encode(p) for p in PROMPTS[:5]], tokenizer.pad_token_id)
    placed = shard_rows({"tokens": tokens, "mask": mask}, mesh, DEFAULT_RULES)
    gen = _generate.lower(sharded, placed["tokens"], placed["mask"], None,
                          jax.numpy.float32(0), jax.random.key(0), config=config,
                          max_new_tokens=4, stop_token_ids=(), greedy=True,
                          pad_token_id=0).compile()
    return {"scores": [str(s.spec) for s in jax.tree.leaves(scores.input_shardings[0][1])],
            "generate": [str(s.spec) for s in gen.input_shardings[0][1:3]]}


def _answer_position_grad(p, b):
    import jax

    from headjax.model import loss, tiny_config

    return jax.value_and_grad(lambda q: loss(q, b, tiny_config(answer_positions=8)))(p)


def _on_mesh(mesh):
    import jax

    from headjax.parallel import DEFAULT_RULES, with_activation_sharding

    return jax.jit(with_activation_sharding(_answer_position_grad, mesh, DEFAULT_RULES))


def answer_position_loss(params, sharded, mesh) -> float:
    """max |difference| of (loss, gradients) with answer_positions = 8, inside the activation
    constraints as the train step runs, between the mesh and one device."""
    import jax

    from headjax.parallel import DEFAULT_RULES, batch_shardings

    batch = probe_batch(8, 2)  # at most 6 answer tokens a row: the answer-positions branch
    reference = jax.jit(_answer_position_grad)(params, batch)
    got = _on_mesh(mesh)(sharded, jax.device_put(batch, batch_shardings(batch, DEFAULT_RULES,
                                                                         mesh)))
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(got), strict=True))


def answer_position_collectives(params, config) -> dict:
    """Collectives of the answer-positions loss gradient compiled for mesh data=8."""
    import jax

    from headjax.app.dry_run import count_collectives
    from headjax.parallel import DEFAULT_RULES, batch_shardings

    sharded, mesh = sharded_params(params, config, {"data": 8, "fsdp": 1, "tensor": 1})
    batch = probe_batch(8, 2)
    placed = jax.device_put(batch, batch_shardings(batch, DEFAULT_RULES, mesh))
    return count_collectives(_on_mesh(mesh).lower(sharded, placed).compile().as_text())


def dry_run_specs(config) -> dict:
    """The dry run's programs on mesh data=2 x fsdp=2 x tensor=2, probe and eval batches of 6."""
    import jax

    from headjax.app.dry_run import plan
    from headjax.train import default_config

    run = default_config()
    run.mesh.data, run.mesh.fsdp, run.mesh.tensor = 2, 2, 2
    run.train.batch_size, run.data.max_len = 4, 32
    run.heads.batch_size, run.eval.batch_size, run.eval.max_new_tokens = 6, 6, 2
    result = plan(run, config, devices=jax.devices())
    return {p.name: p.batch_sharding for p in result.programs}


def multiprocess_results(params, config) -> dict:
    """Greedy texts of 3 prompts and the activation pattern of probe batches of 5 and 8 rows
    for `params` (sharded or not)."""
    from helpers_tokenizer import chatml_tokenizer

    from headjax.eval import generate_text
    from headjax.heads import activation_pattern

    pattern = activation_pattern(params, config, [probe_batch(5, 3), probe_batch(8, 0)],
                                 progress=False)
    return {"texts": generate_text(params, config, chatml_tokenizer(), PROMPTS[:3],
                                   max_new_tokens=6, stop_token_ids=()),
            "per_sample": pattern.per_sample.tolist(), "mean": pattern.mean.tolist()}


def multiprocess(out: str, port: str, process_id: str, num_processes: str) -> None:
    import jax

    from headjax.model import init, tiny_config
    from headjax.parallel import maybe_initialize

    maybe_initialize("on", f"localhost:{port}", int(num_processes), int(process_id))
    config = tiny_config()
    sharded, _ = sharded_params(init(jax.random.key(0), config), config,
                                {"data": -1, "fsdp": 1, "tensor": 1})
    with open(out, "w") as f:
        json.dump(multiprocess_results(sharded, config), f)


def mesh(out: str) -> None:
    import jax

    assert jax.device_count() == 8, jax.devices()
    from helpers_tokenizer import chatml_tokenizer

    from headjax.model import init, tiny_config

    config = tiny_config()
    params = init(jax.random.key(0), config)
    tokenizer = chatml_tokenizer()
    results = {}
    for name, sizes in MESHES.items():
        sharded, mesh = sharded_params(params, config, sizes)
        results[name] = {"generation": generation(params, config, sharded, mesh, tokenizer),
                         "patterns": patterns(params, config, sharded),
                         "compiled": compiled_specs(config, sharded, mesh, tokenizer),
                         "answer_positions": answer_position_loss(params, sharded, mesh)}
    results["dry_run"] = dry_run_specs(config)
    results["answer_position_collectives"] = answer_position_collectives(params, config)
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    {"mesh": mesh, "multiprocess": multiprocess}[sys.argv[1]](*sys.argv[2:])
