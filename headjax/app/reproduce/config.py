"""The reproduction's configuration: a base run config plus the findings stage and the grid.

`base` is a full run config (`headjax.train.config`): model, optimiser, batch, sequence length
and evaluation settings shared by every run. `targets` measures candidate target tasks before and
after a short SFT; `findings` runs SFT on each task alone with all tasks probed; `grid` runs
target-task SFT on few samples per (budget, method, seed); `power` runs the pilot seeds and
the design search of `headjax.app.reproduce.power`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

from headjax.heads.selection import SIMILARITIES
from headjax.train.config import check_ranges, default_config, validate

METHODS = ("plain", "heads_pattern", "heads_random", "warm_pattern", "warm_random",
           "joint_pattern", "joint_random", "select_pattern", "select_random", "select_all",
           "lora_all", "lora_pattern", "lora_random")


FINDINGS_NORMALIZATIONS = ("none", "sum_to_one")


def default_reproduce_config() -> ml_collections.ConfigDict:
    """Every key a reproduction config may set, with its default; locked like
    `default_config()`."""
    c = ml_collections.ConfigDict()
    c.out_dir = "runs/reproduce"  # run directories, findings arrays, results.jsonl
    # The study's record (`reproduce.record`): out_dir's small result files (measures, grid rows,
    # findings arrays), kept here under version control so the study outlives the machine; put
    # back into out_dir before each call, which resumes from them ("" = no record).
    c.record_dir = ""
    c.doc = "docs/reproduction.md"  # the report; figures go to <doc without .md>/
    c.notes = ""  # a hand-written markdown file appended to the report ("" = none)
    # other models' reproduction configs (paths), whose verdicts the report sets beside this
    # model's ("Verdicts per model"; a study not yet measured is named with its command)
    c.compare_configs = ()
    c.base = default_config()

    c.targets = ml_collections.ConfigDict()
    c.targets.candidates = ()  # tasks measured by the "targets" stage
    c.targets.eval_samples = 200  # test examples, the same before and after SFT
    c.targets.steps = 32  # the short SFT (findings' trainer and train_samples)
    c.targets.seed = 0
    c.targets.accuracy_range = (0.1, 0.6)  # base and post-SFT accuracy both inside: eligible

    c.findings = ml_collections.ConfigDict()
    c.findings.target = "gsm_symbolic"  # the complex task
    c.findings.basic = ("basic_arithmetic", "chain_sum", "products", "leg_counting")
    c.findings.unrelated = ("spell_backward",)  # controls for the combination fit
    c.findings.train_samples = 256  # per task
    c.findings.steps = 16
    c.findings.probe_samples = 16
    c.findings.probe_every = 8
    c.findings.k = 10  # heads in a task's top-k set
    c.findings.null_draws = 500
    # Finding 1's ablation check: probes scored per ablated head set (the first N of each
    # task's probe samples; 0 = all `probe_samples`). 11 head sets per task make it the
    # measures stage's largest cost.
    c.findings.ablation_samples = 0
    # Finding 3's null (`findings.perturbation_null`): random perturbations of the base model as
    # large as each task's SFT change, their patterns on the first perturbation_samples probes
    # (0 draws: the null is 1, the pattern moving no more than the parameters).
    c.findings.perturbation_draws = 2
    c.findings.perturbation_samples = 32
    # The patterns the measures read: "none" (the raw scores, as the paper) or "sum_to_one"
    # (each checkpoint's pattern divided by its total, per-sample scores by the same total, so
    # that dAP shows how SFT rearranges the pattern and not how much the scores shrink as the
    # loss falls). The saved runs stay raw; only the measures and the report change.
    c.findings.normalization = "none"
    # SFT seeds per task (data order and train seed, `seeded`; the probes stay fixed): the
    # findings' headline measures get intervals over seeds and a verdict (`reproduce.seeds`).
    # Seed 0 (required) is the findings stage's single run of before (`findings/<task>.npz`),
    # which the detailed tables, the figures and the grid's patterns read.
    c.findings.seeds = (0,)
    # Second targets: each trained alone on every seed like the findings tasks (probed on itself
    # only) and its dAP fitted on the basic tasks' dAPs of the same seed, so Finding 2 is also
    # reported for a target other than `target` without a study of its own
    # (`seeds.second_target_headlines`). Not in the grid, Finding 1 or Finding 3.
    c.findings.second_targets = ()

    c.grid = ml_collections.ConfigDict()
    c.grid.budgets = (8, 32)  # target training samples
    c.grid.epochs = 3  # target phase: ceil(epochs * budget / batch) steps
    c.grid.methods = METHODS
    c.grid.seeds = (0, 1, 2)
    c.grid.preliminary_samples = 128  # N of the basic-task preliminary set
    c.grid.warm_steps = 16  # steps on the preliminary set (joint adds them to the target's)
    c.grid.head_fraction = 0.1
    # LoRA (lora_*): plain LoRA of this rank on the targets; head-LoRA on head_fraction heads
    # at the rank that matches its parameter count (the report shows both budgets as run)
    c.grid.lora_rank = 8
    c.grid.lora_targets = ("q", "k", "v", "o")
    # LoRA runs train at base.train.lr x this: LoRA's best rate sits about ten times full
    # fine-tuning's (Schulman et al., "LoRA Without Regret", 2025)
    c.grid.lora_lr_scale = 10.0
    c.grid.eval_samples = 48
    # Data selection by pattern (select_*): the pool, and the fraction of it trained on
    c.grid.select_pool = ()  # pool tasks; () = findings.basic + findings.unrelated
    c.grid.select_pool_samples = 256  # per pool task (x 5 tasks x 0.1 = preliminary_samples)
    c.grid.select_fraction = 0.1
    c.grid.select_similarity = "pearson"  # pearson | cosine

    # The pilot ("pilot" stage): pilot_seeds SFT runs of targets.steps on findings.target (data
    # order by seed, fixed probes), and the design search ("power" stage) it feeds.
    c.power = ml_collections.ConfigDict()
    c.power.pilot_seeds = (0, 1, 2)
    c.power.cpu_hours = 6.0  # the budget the design must fit
    c.power.r2_half_width = 0.05  # Finding 2's R^2 interval half-width wanted
    c.power.detect = 0.03  # accuracy difference the improvements comparison must detect
    c.power.power = 0.8
    c.power.alpha = 0.05
    c.power.r2 = 0.17  # Finding 2's R^2 the design assumes (the 2026-11-25 run measured 0.17)
    c.power.probes = (16, 32, 64, 128)  # the choices the design search considers
    c.power.findings_seeds = (1, 2, 3, 5)
    c.power.grid_seeds = (3, 5, 10, 20, 40)
    c.power.eval_samples = (200, 500, 1000)
    # The grid whose comparison must be powered: its methods and budgets (() = grid.methods,
    # grid.budgets); cost scales with methods x budgets.
    c.power.grid_methods = ("plain", "warm_pattern", "warm_random")
    c.power.grid_budgets = (32,)
    c.lock()
    return c


def validate_reproduce(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` unchanged if valid; raises naming the dotted key otherwise."""
    validate(config.base)
    for key in ("grid.methods", "power.grid_methods"):
        section, name = key.split(".")
        unknown = sorted(set(config[section][name]) - set(METHODS))
        if unknown:
            raise ValueError(f"config.{key}: unknown {unknown}; known {METHODS}")
    f = config.findings
    if not f.basic:
        raise ValueError("config.findings.basic: name at least one basic task")
    seeds = tuple(f.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or 0 not in seeds:
        raise ValueError(f"config.findings.seeds: {seeds} must be distinct non-negative "
                         "integers including 0 (the runs of the detailed measures)")
    tasks = (f.target, *f.basic, *f.unrelated, *f.second_targets)
    if len(set(tasks)) != len(tasks):
        raise ValueError("config.findings: target, basic, unrelated and second_targets tasks must "
                         "be distinct")
    check_ranges(config, choices={"grid.select_similarity": SIMILARITIES,
                                  "findings.normalization": FINDINGS_NORMALIZATIONS},
                 non_negative=("findings.ablation_samples", "findings.perturbation_draws"),
                 positive=("findings.train_samples", "findings.steps", "findings.probe_samples",
                           "findings.k", "findings.null_draws", "findings.perturbation_samples",
                           "grid.epochs",
                           "grid.preliminary_samples", "grid.warm_steps", "grid.eval_samples",
                           "grid.select_pool_samples", "grid.select_fraction",
                           "grid.lora_rank", "grid.lora_lr_scale", "targets.eval_samples",
                           "targets.steps",
                           "power.cpu_hours", "power.r2_half_width", "power.detect",
                           "power.power", "power.alpha"))
    low, high = config.targets.accuracy_range
    if not 0 <= low < high <= 1:
        raise ValueError(f"config.targets.accuracy_range: {(low, high)} is not 0 <= low < high "
                         "<= 1")
    if len(config.power.pilot_seeds) < 2:
        raise ValueError("config.power.pilot_seeds: name at least two seeds")
    if config.grid.select_fraction > 1:
        raise ValueError(f"config.grid.select_fraction: {config.grid.select_fraction} not in "
                         f"(0, 1]")
    if not config.grid.seeds or not config.grid.budgets or min(config.grid.budgets) <= 0:
        raise ValueError("config.grid: seeds and positive budgets are needed")
    missing = [p for p in config.compare_configs if not Path(p).is_file()]
    if missing:
        raise ValueError(f"config.compare_configs: no file {missing[0]}")
    return config


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of the config file at `path` (as `--config` reads it)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def seeded(run: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """`run` (a run config) with data sampling/order and train seed `seed`, in place: one run of
    the pilot's or the findings stage's seeds."""
    run.data.seed = seed
    run.train.seed = seed
    return run


def findings_tasks(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """(target, *basic, *unrelated)."""
    f = config.findings
    return (f.target, *f.basic, *f.unrelated)


def trained_tasks(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Every task the findings stage trains alone per seed: `findings_tasks`, then
    `findings.second_targets`."""
    return (*findings_tasks(config), *config.findings.second_targets)
