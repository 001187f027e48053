"""Supervised fine-tuning with head-pattern tracking.

  python scripts/train.py --config configs/smollm2_quickstart.py [--config.train.steps=200]

Writes to `run_dir`: metrics.jsonl (train and eval scalars), tensorboard/, checkpoints/ (orbax,
with the data iterator state), eval/step_XXXXXX.jsonl (completions and scores),
patterns/step_XXXXXX.npz (head activation patterns per probe task), summary.json (accuracy before
and after, wall time), guide.json (the `guide` options' choices and the trainable parameters) and
final_model/ (a model directory `load_pretrained` reads).
Re-running the same command resumes from the newest good checkpoint. A NaN/inf loss stops the
run with exit status 1, leaving the newest checkpoint as the last good state. A mistake in the
config, a task, a data file or the model source stops it first with one line and exit status 2
(`--verbose` shows the traceback).

  python scripts/train.py --config C --dry_run [--devices N] [--chip v5p] [--knobs]

compiles the run's train step, head-pattern step and eval forward for its mesh on N devices
(simulated CPU devices, or a TPU slice's compile-only devices when libtpu is installed) from
abstract shapes, without reading weights, and prints per-device memory, FLOPs per step, the
collectives and the chips it fits (docs/scaling.md). With --chip it exits 2 when the run does
not fit that chip.
"""

from __future__ import annotations

import logging

from absl import flags
from ml_collections import config_flags

from headjax.app import cli
from headjax.app.experiment import check_inputs, dry_run, load_model, run, start_processes
from headjax.parallel.hardware import CHIPS
from headjax.train.loop import TrainingDivergedError

CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py).",
                                         lock_config=True)
DRY_RUN = flags.DEFINE_bool("dry_run", False, "Plan the run (compile only, no weights read).")
DEVICES = flags.DEFINE_integer("devices", 0, "--dry_run: device count (default: the mesh's).")
CHIP = flags.DEFINE_string("chip", "", "--dry_run: v5e | v6e | v5p | h100 | h200; exit 2 when "
                           "the run does not fit it.")
KNOBS = flags.DEFINE_bool("knobs", False, "--dry_run: also show what each memory knob saves.")


def plan(config) -> None:
    """Print the dry run's plan; a run that does not fit `--chip` is a user's error."""
    with cli.user_errors():
        report, fits, result = dry_run(config, devices=DEVICES.value, chip=CHIP.value,
                                       knobs=KNOBS.value)
    print(report)
    if not fits:
        raise cli.UserError(
            f"--chip {CHIP.value}: does not fit: the run needs "
            f"{result.peak_bytes / 2 ** 30:.2f} GiB per device, a {CHIPS[CHIP.value].name} "
            f"has {CHIPS[CHIP.value].memory_gib:g} GiB")


def main(argv):
    del argv
    if DRY_RUN.value:
        plan(CONFIG.value)
        return
    logging.getLogger("absl").setLevel(logging.WARNING)  # silence orbax's per-save INFO lines
    logging.getLogger("headjax").setLevel(logging.INFO)
    config = CONFIG.value
    with cli.user_errors():
        check_inputs(config)
    start_processes(config)
    with cli.user_errors():
        model = load_model(config)
    try:
        run(config, model)
    except TrainingDivergedError as err:
        raise SystemExit(f"training stopped: {err}") from err


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    cli.run(main)
