"""Subprocess job for the dry-run tests (the simulated device count must be set before JAX
starts).

  python tests/plan_worker.py llama3_8b OUT.json
      configs/llama3_8b_tpu_v5p.py planned on 64 simulated CPU devices (no weights): per-device
      state and the whole state, each parameter's shard size against its size, whether it fits
      a v5e and a v5p, and the errors of a batch and a mesh that cannot shard.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_config(name: str):
    path = ROOT / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def error_of(fn) -> str:
    try:
        fn()
    except ValueError as err:
        return str(err)
    return ""


def llama3_8b(out: str) -> None:
    from headjax.parallel.hardware import simulate_cpu_devices

    simulate_cpu_devices(64)
    import jax

    from headjax.app.experiment import dry_run
    from headjax.model.presets import architecture
    from headjax.model.transformer import param_axes, param_shapes
    from headjax.parallel import is_small_param, param_shardings
    from headjax.train.trainer import train_setup

    config = load_config("llama3_8b_tpu_v5p")
    _, fits_v5e, plan = dry_run(config, devices=64, chip="v5e")
    model = plan.model
    mesh = train_setup(config, model).mesh
    shardings = param_shardings(param_axes(model), param_shapes(model), tuple(config.mesh.rules),
                                mesh)
    is_names = lambda x: isinstance(x, tuple) and all(isinstance(n, str) for n in x)  # noqa: E731
    params = {}
    for (path, names), shape, sharding in zip(
            jax.tree_util.tree_flatten_with_path(param_axes(model), is_leaf=is_names)[0],
            jax.tree.leaves(param_shapes(model), is_leaf=lambda x: isinstance(x, tuple)),
            jax.tree.leaves(shardings), strict=True):
        size = 1
        for n in shape:
            size *= n
        shard = 1
        for n in sharding.shard_shape(shape):
            shard *= n
        params[jax.tree_util.keystr(path)] = {"size": size, "shard": shard,
                                              "small": is_small_param(names)}

    wide = config.copy_and_resolve_references()
    wide.mesh.fsdp, wide.mesh.tensor = 4, 16
    odd = config.copy_and_resolve_references()
    odd.train.batch_size = 200
    result = {
        "devices": plan.devices, "num_params": plan.num_params,
        "total_state_bytes": plan.total_state_bytes, "param_bytes": plan.param_bytes,
        "opt_state_bytes": plan.opt_state_bytes,
        "same_shape": model.num_params() == architecture("llama3-8b").num_params(),
        "programs": {p.name: {"peak": p.peak_bytes, "temp": p.temp_bytes,
                              "collectives": p.collectives} for p in plan.programs},
        "step_flops": plan.step_flops, "model_flops": plan.model_flops,
        "fits_v5e": fits_v5e, "fits_v5p": plan.fits("v5p"), "params": params,
        "tensor_error": error_of(lambda: dry_run(wide, devices=64)),
        "batch_error": error_of(lambda: dry_run(odd, devices=64)),
    }
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    {"llama3_8b": llama3_8b}[sys.argv[1]](*sys.argv[2:])
