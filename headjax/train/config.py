"""The run configuration's schema (every section, with defaults) and its validation.

`default_config()` is the schema: a config file starts from it and changes values. It is locked,
so ml_collections itself rejects an unknown key (AttributeError) and a value of another type
(TypeError), in a config file and in a `--config.section.key=value` override alike. `validate`
adds what types cannot say: choices, ranges and rules across fields, naming the dotted key.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from headjax.heads.guidance import GUIDE_SCHEDULES, HEAD_SELECTIONS, MIXTURES
from headjax.heads.scores import LOSS_KINDS
from headjax.heads.selection import SELECT_METHODS, SIMILARITIES
from headjax.lora import TARGETS
from headjax.model.config import ATTENTION_IMPLS, DTYPES, REMAT_POLICIES
from headjax.model.presets import ARCHITECTURES
from headjax.parallel.distributed import MODES
from headjax.parallel.rules import DEFAULT_RULES
from headjax.train.optimizer import OPTIMIZERS, SCHEDULES
from headjax.train.rounding import ROUNDINGS


def default_config() -> ml_collections.ConfigDict:
    """Every key a run config may set, with its default; locked (a new section or key is one
    more line in its section below)."""
    c = ml_collections.ConfigDict()
    c.run_dir = "runs/default"

    c.model = ml_collections.ConfigDict()
    c.model.pretrained = "smollm2-135m-instruct"  # known name, HF dir, .gguf file or checkpoint
    c.model.dtype = "float32"  # compute dtype
    c.model.param_dtype = "float32"  # storage dtype of the trained parameters
    c.model.remat = "none"  # none | full | dots
    c.model.attention_impl = "xla"  # xla | fused
    c.model.scan_layers = True
    # Project onto the vocabulary only positions predicting answer tokens, at most this many per
    # row (exact: longer answers take the full projection); 0 = every position.
    c.model.answer_positions = 0
    # A preset shape (headjax.model.presets) for `--dry_run` when model.pretrained is not on
    # this machine; "" = read the shape from model.pretrained's metadata.
    c.model.architecture = ""

    c.data = ml_collections.ConfigDict()
    c.data.tasks = ("basic_arithmetic",)
    c.data.weights = ()  # mixture weights, one per task; empty = uniform
    c.data.max_len = 128
    c.data.packing = False
    c.data.train_samples = 2000  # per task
    c.data.seed = 0
    # Data sources in data.tasks (hf:NAME[:CONFIG][@SPLIT], dataset folders, data files):
    c.data.prompt_field = "prompt"  # column of the user prompt
    c.data.answer_field = "answer"  # column of the target answer
    c.data.messages_field = "messages"  # column of chats (role/content turns), used if present
    c.data.streaming = False  # read sources as IterableDatasets (position kept in checkpoints)

    c.train = ml_collections.ConfigDict()
    c.train.steps = 100
    c.train.batch_size = 16  # global batch (rows)
    c.train.optimizer = "adamw"
    c.train.lr = 1e-4
    c.train.schedule = "cosine"  # cosine | linear | constant
    c.train.warmup_steps = 10
    c.train.end_lr_fraction = 0.0
    c.train.weight_decay = 0.0
    c.train.b1 = 0.9
    c.train.b2 = 0.999
    c.train.grad_clip = 1.0  # global norm; 0 disables
    c.train.grad_accum = 1  # micro-batches per step
    c.train.trainable_heads = ""  # .npy of bool [layers, heads]: train only these heads
    c.train.trainable_kv = True  # with trainable_heads: also their key/value group
    c.train.seed = 0
    c.train.log_every = 1
    # Memory knobs (the dry run shows what each saves).
    c.train.opt_state_dtype = "float32"  # AdamW first moment: float32 | bfloat16
    c.train.loss_chunk = 0  # positions per vocabulary projection; 0 = whole logits at once
    # How the f32 weights become the bf16 compute copy (model.dtype="bfloat16") each step:
    # nearest | stochastic (unbiased, so small updates are not lost; headjax.train.rounding).
    c.train.rounding = "nearest"

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.rules = DEFAULT_RULES

    c.distributed = ml_collections.ConfigDict()
    c.distributed.mode = "auto"  # auto | on | off
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 0
    c.distributed.process_id = -1

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.dir = ""  # empty = run_dir/checkpoints
    c.checkpoint.every = 50  # steps; 0 = only at the end
    c.checkpoint.keep = 2
    c.checkpoint.async_save = True
    c.checkpoint.export_final = True  # run_dir/final_model: a model dir load_pretrained reads

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 50  # steps; 0 = only before and after training
    c.eval.tasks = ()  # empty = data.tasks
    c.eval.samples = 64
    c.eval.max_new_tokens = 16
    c.eval.batch_size = 32

    c.heads = ml_collections.ConfigDict()
    c.heads.tasks = ()  # probe tasks; empty = data.tasks
    c.heads.samples = 32
    c.heads.batch_size = 16
    c.heads.every = 50  # steps; 0 = only at step 0 and the final step
    c.heads.loss_kind = "sample_mean"

    c.guide = ml_collections.ConfigDict()  # the paper's SFT improvements (headjax.app.guide)
    c.guide.basis = ()  # basic tasks of the preliminary set
    c.guide.mixture = "none"  # none | uniform | random | pattern
    c.guide.patterns = ""  # .npz of [layers, heads] patterns by task; "" = computed at start
    c.guide.probe_samples = 32  # per basic task, for computed patterns
    c.guide.preliminary_samples = 256  # N: basic-task examples, split N * a_i / sum(a)
    c.guide.schedule = "warm_start"  # warm_start | joint
    c.guide.warm_steps = 50  # steps on the preliminary set before the target (warm_start)
    c.guide.warm_dir = ""  # the warm-start run's directory; "" = run_dir/warm_start
    c.guide.heads = "all"  # all | pattern | random: which heads the target phase trains
    c.guide.head_fraction = 0.1  # of all heads, for heads = pattern | random
    c.guide.train_mlp = False  # with heads != all: also the MLPs of layers holding them
    # With lora.enabled and heads != all: head-LoRA's rank is set so that its adapters hold about
    # as many parameters as plain LoRA of this rank on every head (lora.alpha kept); 0 = off.
    c.guide.lora_budget_rank = 0
    c.guide.seed = 0  # random mixtures and random heads

    c.lora = ml_collections.ConfigDict()  # adapters instead of full fine-tuning (headjax.lora)
    c.lora.enabled = False
    c.lora.rank = 8  # r
    c.lora.alpha = 16.0  # scale alpha / r
    c.lora.dropout = 0.0  # on each adapter's input in training, in [0, 1)
    c.lora.targets = ("q", "k", "v", "o")  # among q, k, v, o, gate, up, down

    c.select = ml_collections.ConfigDict()  # data selection by pattern (headjax.app.select)
    c.select.method = "none"  # none | pattern | random | all
    c.select.pool = ()  # tasks of the candidate pool
    c.select.pool_samples = 256  # training examples per pool task
    c.select.fraction = 0.1  # of the pool, for method = pattern | random
    c.select.similarity = "pearson"  # pearson | cosine, over heads
    c.select.with_target = False  # also train on the target's own training examples
    c.select.seed = 0  # the random subset
    c.lock()
    return c


CHOICES = {
    "model.dtype": DTYPES,
    "model.param_dtype": DTYPES,
    "model.remat": REMAT_POLICIES,
    "model.attention_impl": ATTENTION_IMPLS,
    "model.architecture": ("",) + tuple(ARCHITECTURES),
    "train.opt_state_dtype": ("float32", "bfloat16"),
    "train.rounding": ROUNDINGS,
    "train.optimizer": OPTIMIZERS,
    "train.schedule": SCHEDULES,
    "distributed.mode": MODES,
    "heads.loss_kind": LOSS_KINDS,
    "guide.mixture": MIXTURES,
    "guide.schedule": GUIDE_SCHEDULES,
    "guide.heads": HEAD_SELECTIONS,
    "select.method": SELECT_METHODS,
    "select.similarity": SIMILARITIES,
}
POSITIVE = ("data.max_len", "data.train_samples", "train.steps", "train.batch_size", "train.lr",
            "train.grad_accum", "train.log_every", "checkpoint.keep", "eval.samples",
            "eval.max_new_tokens", "eval.batch_size", "heads.samples", "heads.batch_size",
            "guide.probe_samples", "guide.preliminary_samples", "guide.warm_steps",
            "guide.head_fraction", "lora.rank", "lora.alpha", "select.pool_samples",
            "select.fraction")
NON_NEGATIVE = ("train.warmup_steps", "train.weight_decay", "train.grad_clip",
                "checkpoint.every", "eval.every", "heads.every", "train.loss_chunk",
                "model.answer_positions", "guide.lora_budget_rank")


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


def check_ranges(config: ml_collections.ConfigDict, choices: dict[str, tuple] = CHOICES,
                 positive: tuple[str, ...] = POSITIVE, non_negative: tuple[str, ...] = NON_NEGATIVE,
                 ) -> None:
    """Raise ValueError naming the dotted key of a value outside its choices or range, and
    TypeError for a bool in a numeric field (ml_collections lets True into an int field)."""
    for key, options in choices.items():
        if _get(config, key) not in options:
            raise ValueError(f"config.{key}: {_get(config, key)!r} not in {tuple(options)}")
    for key in (*positive, *non_negative):
        value = _get(config, key)
        if isinstance(value, bool):
            raise TypeError(f"config.{key}: expected int, got bool {value!r}")
        if value <= 0 if key in positive else value < 0:
            raise ValueError(f"config.{key}: must be {'>' if key in positive else '>='} 0, "
                             f"got {value!r}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` unchanged if it matches the schema and its values make sense; otherwise raises
    ValueError/TypeError naming the dotted key. Keys and types are `default_config()`'s lock's
    business."""
    check_ranges(config)
    if not config.data.tasks:
        raise ValueError("config.data.tasks: name at least one task")
    if config.data.weights and len(config.data.weights) != len(config.data.tasks):
        raise ValueError(f"config.data.weights: {len(config.data.weights)} weights for "
                         f"{len(config.data.tasks)} tasks")
    if config.train.warmup_steps > config.train.steps:
        raise ValueError(f"config.train.warmup_steps: {config.train.warmup_steps} exceeds "
                         f"train.steps={config.train.steps}")
    if config.train.batch_size % config.train.grad_accum:
        raise ValueError(f"config.train.grad_accum: {config.train.grad_accum} does not divide "
                         f"train.batch_size={config.train.batch_size}")
    if config.train.rounding == "stochastic" and (config.model.dtype, config.model.param_dtype) != (
            "bfloat16", "float32"):
        raise ValueError(f"config.train.rounding: 'stochastic' rounds float32 weights to a "
                         f"bfloat16 compute copy; model.dtype={config.model.dtype!r}, "
                         f"model.param_dtype={config.model.param_dtype!r}")
    _validate_guide(config)
    _validate_lora(config)
    _validate_select(config)
    return config


def _validate_lora(config: ml_collections.ConfigDict) -> None:
    lora = config.lora
    if not 0 <= lora.dropout < 1:
        raise ValueError(f"config.lora.dropout: {lora.dropout} not in [0, 1)")
    unknown = [t for t in lora.targets if t not in TARGETS]
    if not lora.targets or unknown or len(set(lora.targets)) != len(lora.targets):
        raise ValueError(f"config.lora.targets: {tuple(lora.targets)} must name distinct "
                         f"projections among {tuple(TARGETS)}")
    if lora.enabled and config.guide.train_mlp:
        raise ValueError("config.guide.train_mlp: with lora.enabled the adapted projections are "
                         "lora.targets (add gate/up/down there)")


def _validate_guide(config: ml_collections.ConfigDict) -> None:
    g = config.guide
    if g.head_fraction > 1:
        raise ValueError(f"config.guide.head_fraction: {g.head_fraction} not in (0, 1]")
    if g.mixture != "none":
        if not g.basis:
            raise ValueError(f"config.guide.basis: guide.mixture={g.mixture!r} needs basic tasks")
        if config.data.weights:
            raise ValueError("config.data.weights: with guide.mixture the example counts set the "
                             "proportions; leave data.weights empty")
        overlap = sorted(set(g.basis) & set(config.data.tasks))
        if overlap:
            raise ValueError(f"config.guide.basis: {overlap} are also target tasks (data.tasks)")
    needs_one = [k for k, on in (("guide.mixture='pattern'", g.mixture == "pattern"),
                                 ("guide.heads='pattern'", g.heads == "pattern")) if on]
    if needs_one and len(config.data.tasks) != 1:
        raise ValueError(f"config.data.tasks: {needs_one[0]} needs exactly one target task, got "
                         f"{tuple(config.data.tasks)}")
    if config.data.streaming and (g.mixture != "none" or g.heads != "all"):
        raise ValueError("config.data.streaming: guide.mixture and guide.heads need the target's "
                         "training samples in memory; set data.streaming=False")
    if g.heads != "all" and config.train.trainable_heads:
        raise ValueError("config.guide.heads: choose heads either by guide.heads or by "
                         "train.trainable_heads, not both")


def _validate_select(config: ml_collections.ConfigDict) -> None:
    """Raise naming the key when the `select` section cannot run (its choices are in CHOICES)."""
    s = config.select
    if s.fraction > 1:
        raise ValueError(f"config.select.fraction: {s.fraction} not in (0, 1]")
    if s.method == "none":
        return
    if not s.pool:
        raise ValueError(f"config.select.pool: select.method={s.method!r} needs pool tasks")
    if s.method == "pattern" and len(config.data.tasks) != 1:
        raise ValueError(f"config.data.tasks: select.method='pattern' needs exactly one target "
                         f"task, got {tuple(config.data.tasks)}")
    if config.guide.mixture != "none" or config.guide.heads != "all":
        raise ValueError("config.select.method: data selection runs without guide.mixture and "
                         "guide.heads; set them to 'none' and 'all'")
    if config.data.weights:
        raise ValueError("config.data.weights: with select.method the chosen examples are drawn "
                         "alike; leave data.weights empty")
    if config.data.streaming:
        raise ValueError("config.data.streaming: select needs the pool and the target's training "
                         "samples in memory; set data.streaming=False")
