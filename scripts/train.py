"""Supervised fine-tuning with head-pattern tracking.

  python scripts/train.py --config configs/smollm2_quickstart.py [--config.train.steps=200]

Writes to `run_dir`: metrics.jsonl, tensorboard/, checkpoints/, patterns/step_XXXXXX.npz.
Re-running the same command resumes from the newest good checkpoint.
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

from headjax.train.experiment import run

CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py).",
                                         lock_config=True)


def main(argv):
    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)  # silence orbax's per-save INFO lines
    logging.getLogger("headjax").setLevel(logging.INFO)
    run(CONFIG.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
