"""The reproduction's configuration: a base run config plus the findings stage and the grid.

`base` is a full run config (`headjax.train.config`): model, optimiser, batch, sequence length
and evaluation settings shared by every run. `findings` runs SFT on each task alone with all tasks
probed; `grid` runs target-task SFT on few samples per (budget, method, seed).
"""

from __future__ import annotations

import ml_collections

from headjax.heads.selection import SIMILARITIES
from headjax.train.config import check_ranges, default_config, validate

METHODS = ("plain", "heads_pattern", "heads_random", "warm_pattern", "warm_random",
           "joint_pattern", "joint_random", "select_pattern", "select_random", "select_all",
           "lora_all", "lora_pattern", "lora_random")


def default_reproduce_config() -> ml_collections.ConfigDict:
    """Every key a reproduction config may set, with its default; locked like
    `default_config()`."""
    c = ml_collections.ConfigDict()
    c.out_dir = "runs/reproduce"  # run directories, findings arrays, results.jsonl
    c.doc = "docs/reproduction.md"  # the report; figures go to <doc without .md>/
    c.notes = ""  # a hand-written markdown file appended to the report ("" = none)
    c.base = default_config()

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
    c.grid.eval_samples = 48
    # Data selection by pattern (select_*): the pool, and the fraction of it trained on
    c.grid.select_pool = ()  # pool tasks; () = findings.basic + findings.unrelated
    c.grid.select_pool_samples = 256  # per pool task (x 5 tasks x 0.1 = preliminary_samples)
    c.grid.select_fraction = 0.1
    c.grid.select_similarity = "pearson"  # pearson | cosine
    c.lock()
    return c


def validate_reproduce(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` unchanged if valid; raises naming the dotted key otherwise."""
    validate(config.base)
    unknown = sorted(set(config.grid.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"config.grid.methods: unknown {unknown}; known {METHODS}")
    f = config.findings
    if not f.basic:
        raise ValueError("config.findings.basic: name at least one basic task")
    if len({f.target, *f.basic, *f.unrelated}) != 1 + len(f.basic) + len(f.unrelated):
        raise ValueError("config.findings: target, basic and unrelated tasks must be distinct")
    check_ranges(config, choices={"grid.select_similarity": SIMILARITIES}, non_negative=(),
                 positive=("findings.train_samples", "findings.steps", "findings.probe_samples",
                           "findings.k", "findings.null_draws", "grid.epochs",
                           "grid.preliminary_samples", "grid.warm_steps", "grid.eval_samples",
                           "grid.select_pool_samples", "grid.select_fraction",
                           "grid.lora_rank"))
    if config.grid.select_fraction > 1:
        raise ValueError(f"config.grid.select_fraction: {config.grid.select_fraction} not in "
                         f"(0, 1]")
    if not config.grid.seeds or not config.grid.budgets or min(config.grid.budgets) <= 0:
        raise ValueError("config.grid: seeds and positive budgets are needed")
    return config


def findings_tasks(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """(target, *basic, *unrelated)."""
    f = config.findings
    return (f.target, *f.basic, *f.unrelated)
