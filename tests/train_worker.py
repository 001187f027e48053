"""Subprocess jobs for the training tests (device count and distributed start-up must be set
before JAX starts, and a SIGKILL needs its own process).

  python tests/train_worker.py sharded OUT.json
      8 host devices: max |param difference| after 3 steps between a single-device step and the
      sharded step on data=2 x fsdp=2 x tensor=2 and on fsdp=8 (+ grad_accum=2 on the former).
  python tests/train_worker.py lora_sharded OUT.json
      8 host devices: the same for a LoRA state (adapters on every projection, b nonzero), plus
      the PartitionSpecs the adapters and their optimizer state were given.
  python tests/train_worker.py multiprocess OUT.npz PORT PROCESS_ID NUM_PROCESSES
      one process of a `jax.distributed` run (1 CPU device each, mesh data=NUM_PROCESSES):
      final params after 3 steps.
  python tests/train_worker.py loop RUN_DIR STEPS DELAY_S
      the real training loop (`headjax.train.train`) on the tiny model with synthetic batches
      (each taking DELAY_S seconds, so a test can kill the run mid-way), a checkpoint every step;
      final params to RUN_DIR/final_params.npz.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

BATCH, SEQ, STEPS = 8, 16, 3


class SyntheticBatches:
    """Deterministic resumable batches: batch i is drawn from seed i."""

    def __init__(self, state: dict | None = None, *, delay: float = 0.0):
        self.index = (state or {}).get("index", 0)
        self.delay = delay

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        time.sleep(self.delay)
        rng = np.random.default_rng(self.index)
        self.index += 1
        tokens = rng.integers(0, 128, (BATCH, SEQ)).astype(np.int32)
        loss_mask = np.zeros((BATCH, SEQ), np.float32)
        loss_mask[:, SEQ // 2:] = 1.0
        segment_ids = np.ones((BATCH, SEQ), np.int32)
        segment_ids[0, -3:] = 0  # one padded row end
        loss_mask[0, -3:] = 0.0
        return {"tokens": tokens, "loss_mask": loss_mask, "segment_ids": segment_ids}

    def state_dict(self) -> dict:
        return {"index": self.index}


def tiny_setup():
    import jax

    from headjax.model import init, tiny_config
    from headjax.train import make_optimizer, make_schedule

    config = tiny_config()
    params = init(jax.random.key(0), config)
    schedule = make_schedule("cosine", 1e-2, 10, 2)
    optimizer = make_optimizer(schedule, weight_decay=0.1, grad_clip=1.0)
    return config, params, optimizer, schedule


def lora_setup(config, params):
    """`params` as a `LoraParams` with rank-2 adapters on every projection, b ~ N(0, 0.1)."""
    import jax

    from headjax.lora import LoraParams, init_adapters, lora_spec

    spec = lora_spec(2, 4.0, ("q", "k", "v", "o", "gate", "up", "down"))
    adapters = init_adapters(jax.random.key(1), config, spec)
    for key, ab in adapters.items():
        ab["b"] = 0.1 * np.random.default_rng(len(key)).standard_normal(ab["b"].shape)
    return LoraParams(params, adapters, spec)


def run_steps(mesh_sizes: dict | None, grad_accum: int = 1, lora: bool = False,
              specs: dict | None = None):
    """Params after `STEPS` steps: unsharded jit when `mesh_sizes` is None, else sharded.
    lora: train adapters (`lora_setup`); specs: filled with the state's PartitionSpecs."""
    import jax

    from headjax.parallel import (
        DEFAULT_RULES,
        batch_shardings,
        global_batch,
        make_mesh,
        replicated,
    )
    from headjax.train import create_state, jit_train_step, make_train_step, sharded_state

    config, params, optimizer, schedule = tiny_setup()
    if lora:
        params = lora_setup(config, params)
    step = make_train_step(config, optimizer, schedule, grad_accum=grad_accum)
    batches = SyntheticBatches()
    if mesh_sizes is None:
        state, fn, put = create_state(params, optimizer, 0), jax.jit(step), lambda b: b
    else:
        mesh = make_mesh(mesh_sizes)
        state, state_sh = sharded_state(params, config, optimizer, 0, mesh, DEFAULT_RULES)
        example = next(SyntheticBatches())
        batch_sh = batch_shardings(example, DEFAULT_RULES, mesh)
        fn = jit_train_step(step, state_sh, batch_sh, replicated(mesh))
        put = lambda b: global_batch(b, batch_sh)  # noqa: E731
    for _ in range(STEPS):
        state, _ = fn(state, put(next(batches)))
    if specs is not None:
        specs.update({jax.tree_util.keystr(path): list(x.sharding.spec) for path, x in
                      jax.tree_util.tree_flatten_with_path(state)[0] if np.ndim(x) > 0})
    return jax.tree.map(np.asarray, jax.device_get(state.params))


def max_difference(a, b) -> float:
    import jax

    return float(max(jax.tree.leaves(jax.tree.map(lambda x, y: np.abs(x - y).max(), a, b))))


def sharded(out: str) -> None:
    import jax

    assert jax.device_count() == 8, jax.devices()
    reference = run_steps(None)
    results = {
        "data2_fsdp2_tensor2": max_difference(reference, run_steps(
            {"data": 2, "fsdp": 2, "tensor": 2})),
        "fsdp8": max_difference(reference, run_steps({"data": 1, "fsdp": -1, "tensor": 1})),
        "data2_fsdp2_tensor2_accum2": max_difference(reference, run_steps(
            {"data": 2, "fsdp": 2, "tensor": 2}, grad_accum=2)),
        "changed": max_difference(reference, tiny_setup()[1]),
    }
    with open(out, "w") as f:
        json.dump(results, f)


def lora_sharded(out: str) -> None:
    import jax

    assert jax.device_count() == 8, jax.devices()
    reference, specs = run_steps(None, lora=True), {}
    results = {
        "data2_fsdp2_tensor2": max_difference(reference, run_steps(
            {"data": 2, "fsdp": 2, "tensor": 2}, lora=True, specs=specs)),
        "changed": max_difference(reference.adapters, lora_setup(*tiny_setup()[:2]).adapters),
        "specs": specs,
    }
    with open(out, "w") as f:
        json.dump(results, f)


def multiprocess(out: str, port: str, process_id: str, num_processes: str) -> None:
    from headjax.parallel import maybe_initialize

    maybe_initialize("on", f"localhost:{port}", int(num_processes), int(process_id))
    params = run_steps({"data": -1, "fsdp": 1, "tensor": 1})
    np.savez(out, **{str(i): x for i, x in enumerate(_leaves(params))})


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def loop(run_dir: str, steps: str, delay: str) -> None:
    import jax

    from headjax.model import init, tiny_config
    from headjax.train import default_config, train

    config = default_config()
    config.run_dir = run_dir
    config.train.update(steps=int(steps), batch_size=BATCH, lr=1e-2, warmup_steps=1,
                        weight_decay=0.1)
    config.checkpoint.update(every=1, keep=2, async_save=True)
    model_config = tiny_config()
    state = train(config, model_config=model_config, params=init(jax.random.key(0), model_config),
                  make_batches=lambda s: SyntheticBatches(s, delay=float(delay)))
    np.savez(os.path.join(run_dir, "final_params.npz"),
             **{str(i): np.asarray(x) for i, x in enumerate(_leaves(state.params))})


if __name__ == "__main__":
    {"sharded": sharded, "lora_sharded": lora_sharded, "multiprocess": multiprocess,
     "loop": loop}[sys.argv[1]](*sys.argv[2:])
