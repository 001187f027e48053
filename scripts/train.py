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
"""

from __future__ import annotations

import logging

from absl import flags
from ml_collections import config_flags

from headjax import cli
from headjax.train.experiment import check_inputs, load_model, run, start_processes
from headjax.train.loop import TrainingDivergedError

CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py).",
                                         lock_config=True)


def main(argv):
    del argv
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
