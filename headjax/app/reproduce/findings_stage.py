"""Stage 1: SFT on each task alone, per seed, with every task probed.

For each task t of (target, *basic, *unrelated, *second_targets) and each seed s of
`findings.seeds`: `findings.steps` SFT steps on `findings.train_samples` examples of t (data
sampling/order and train seed s), the activation patterns of t and of the target (of t alone for
a second target) recorded on their fixed probe sets
(data seed `base.data.seed`, the same for every seed) at steps 0, `probe_every`, ..., final
(step 0, the base model, is scored once per task for all seeds:
`out_dir/findings/base_patterns.npz`). Saved per task t and seed s (`out_dir/findings/<t>.npz`
for s = 0, the single run of before when `base.data.seed = base.train.seed = 0`;
`out_dir/findings/s<s>/<t>.npz` else; each run's directory is its path without `.npz`):

    steps                   [steps]
    <u>                     [steps, layers, heads]    AP of probe task u (t, target) along t's run
    per_sample/<u>@base     [samples, layers, heads]  u's per-sample scores at step 0
    per_sample/<u>@final    [samples, layers, heads]  u's per-sample scores at the final step
    head_change             [layers, heads]   relative Frobenius change of each head's q/k/v/o
    param_change            scalar            ||d theta|| / ||theta||
    concentration           scalar            fraction of entries holding 90% of squared change

(keys and files of `headjax.train.patterns`). t's own change is
dAP_t = AP_t(final of run t) - AP_t(step 0).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from headjax.app.experiment import probe_hook, train_batches
from headjax.app.guide import target_examples
from headjax.app.reproduce.config import findings_tasks, seeded, trained_tasks
from headjax.heads import change_concentration, head_param_change, relative_param_change
from headjax.lora import model_params
from headjax.train.loop import Hooks
from headjax.train.patterns import (
    load_arrays,
    load_run_patterns,
    pattern_path,
    per_sample_key,
    read_step,
    record_patterns,
    save_npz_atomically,
    task_of,
)
from headjax.train.trainer import train

log = logging.getLogger(__name__)


def findings_run_config(config: ml_collections.ConfigDict, task: str,
                        seed: int = 0) -> ml_collections.ConfigDict:
    """The run config of task `task`'s SFT of seed `seed` in the findings stage (data order and
    train seed `seed`, `config.seeded`; probes: `fixed_probes`)."""
    c = seeded(config.base.copy_and_resolve_references(), seed)  # locked like `base`
    f = config.findings
    c.run_dir = str(findings_path(config, task, seed).with_suffix(""))
    c.data.tasks = (task,)
    c.data.train_samples = f.train_samples
    c.train.steps = f.steps
    c.train.warmup_steps = min(c.train.warmup_steps, f.steps)
    c.heads.tasks = (tuple(dict.fromkeys((task, f.target))) if task in findings_tasks(config)
                     else (task,))
    c.heads.samples = f.probe_samples
    c.heads.every = f.probe_every
    c.checkpoint.update(every=0, keep=1, export_final=False)
    return c


def findings_path(config: ml_collections.ConfigDict, task: str, seed: int = 0) -> Path:
    """`out_dir/findings/<task>.npz` for seed 0, `out_dir/findings/s<seed>/<task>.npz` else (the
    run directory: the same without `.npz`)."""
    root = Path(config.out_dir) / "findings"
    return (root if seed == 0 else root / f"s{seed}") / f"{task}.npz"


def fixed_probes(config: ml_collections.ConfigDict, run: ml_collections.ConfigDict,
                 tokenizer) -> dict:
    """`run`'s probe batches (`heads.tasks`) on the fixed probe samples of data seed
    `base.data.seed`, the same for every SFT seed."""
    fixed = run.copy_and_resolve_references()
    fixed.data.seed = config.base.data.seed
    return probe_hook(fixed, tokenizer)


def base_patterns(config: ml_collections.ConfigDict, base_params, model_config,
                  tokenizer) -> Path:
    """`out_dir/findings/base_patterns.npz`: every trained task's AP (and per-sample scores) at
    the base model (step 0 of every seed's runs), computed once per task: tasks added to the
    config later are scored and merged into the file."""
    path = Path(config.out_dir) / "findings" / "base_patterns.npz"
    arrays = load_arrays(path) if path.exists() else {}
    missing = tuple(t for t in trained_tasks(config) if t not in arrays)
    if missing:
        every = findings_run_config(config, config.findings.target)
        every.heads.tasks = missing
        added = path.with_name("base_patterns_added.npz")
        write = jax.process_index() == 0
        record_patterns(base_params, fixed_probes(config, every, tokenizer), model_config, added,
                        loss_kind=every.heads.loss_kind, write=write)
        if write:
            save_npz_atomically(path, {**arrays, **load_arrays(added)})
            added.unlink()
    return path


def seed_step_zero(run: ml_collections.ConfigDict, base: Path) -> None:
    """Write the run's step-0 patterns (its probe tasks) from the base patterns."""
    step_zero = pattern_path(run.run_dir, 0)
    if step_zero.exists():
        return
    arrays = {k: v for k, v in load_arrays(base).items() if task_of(k) in run.heads.tasks}
    save_npz_atomically(step_zero, arrays)


def run_findings(config: ml_collections.ConfigDict, base_params, model_config, tokenizer,
                 after_run: Callable[[], None] = lambda: None) -> None:
    """Train and probe every (findings task, `findings.seeds` seed) not already saved (resumable
    per task and seed and, inside a run, from its checkpoints), calling `after_run` after each
    run saved (and after the base patterns). `base_params`: host (numpy) arrays."""
    base = base_patterns(config, base_params, model_config, tokenizer)
    after_run()
    for seed in config.findings.seeds:
        for task in trained_tasks(config):
            path = findings_path(config, task, seed)
            if not path.exists():
                findings_run(config, base_params, model_config, tokenizer, task, seed, base)
                after_run()


def findings_run(config, base_params, model_config, tokenizer, task: str, seed: int,
                 base: Path) -> None:
    """SFT of seed `seed` on `task` alone, probed; saves `findings_path(config, task, seed)`."""
    run = findings_run_config(config, task, seed)
    seed_step_zero(run, base)
    log.info("findings: SFT on %s, seed %d", task, seed)
    state = train(run, model_config=model_config, params=base_params,
                  make_batches=train_batches(run, tokenizer, target_examples(run)),
                  hooks=Hooks(probes=fixed_probes(config, run, tokenizer)))
    after = jax.device_get(model_params(state.params))
    steps, patterns = load_run_patterns(run.run_dir)
    arrays = {"steps": np.asarray(steps), **patterns}
    for moment, step in (("base", steps[0]), ("final", steps[-1])):
        per_sample = read_step(pattern_path(run.run_dir, step))[1]
        arrays.update({per_sample_key(u, moment): per_sample[u] for u in patterns})
    arrays["head_change"] = np.asarray(head_param_change(base_params, after).combined)
    arrays["param_change"] = np.asarray(relative_param_change(base_params, after))
    arrays["concentration"] = np.asarray(change_concentration(base_params, after))
    save_npz_atomically(findings_path(config, task, seed), arrays)
    shutil.rmtree(Path(run.run_dir) / "checkpoints", ignore_errors=True)


def load_findings(config: ml_collections.ConfigDict, seed: int = 0,
                  tasks: tuple[str, ...] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{task: its saved arrays} for every findings task (or each of `tasks`), runs of seed
    `seed`."""
    tasks = findings_tasks(config) if tasks is None else tasks
    paths = {task: findings_path(config, task, seed) for task in tasks}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no findings run of seed {seed} (config."
                                "findings.seeds); run the findings stage (--stages findings)")
    loaded = {task: load_arrays(path) for task, path in paths.items()}
    if config.findings.normalization == "sum_to_one":
        loaded = {task: sum_to_one(arrays) for task, arrays in loaded.items()}
    return loaded


def sum_to_one(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One run's arrays with each probe task's pattern `[steps, layers, heads]` divided, step by
    step, by its total, and its per-sample scores at the first and last step
    (`per_sample/<u>@base`, `@final`) by the same totals (so their mean is still the pattern);
    other arrays unchanged."""
    out = dict(arrays)
    tasks = [k for k in arrays if per_sample_key(k, "base") in arrays]
    for u in tasks:
        totals = arrays[u].sum(axis=(-2, -1))  # [steps]
        out[u] = arrays[u] / totals[:, None, None]
        out[per_sample_key(u, "base")] = arrays[per_sample_key(u, "base")] / totals[0]
        out[per_sample_key(u, "final")] = arrays[per_sample_key(u, "final")] / totals[-1]
    return out


def findings_digest(findings: dict[str, dict[str, np.ndarray]]) -> str:
    """sha256 (hex) of `load_findings`' arrays: every task's every key, name, dtype, shape and
    bytes, in sorted order; equal digests mean the same runs under the same normalization."""
    digest = hashlib.sha256()
    for task in sorted(findings):
        for key in sorted(findings[task]):
            array = np.ascontiguousarray(findings[task][key])
            digest.update(f"{task}/{key}:{array.dtype}{array.shape};".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()
