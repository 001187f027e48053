"""Accuracy per task of the pretrained model or a trained checkpoint.

  python scripts/evaluate.py --config configs/smollm2_quickstart.py \
      [--checkpoint runs/smollm2_quickstart/checkpoints]

Without --checkpoint the config's pretrained model is scored; with it, the newest good step of
that checkpoint directory (its params replace the pretrained ones).
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from headjax.train.experiment import accuracy_hook, load_model

CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py).")
flags.DEFINE_string("checkpoint", None, "Checkpoint directory written by scripts/train.py.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from headjax.train.checkpoint import restore_params
    from headjax.train.config import validate

    config = validate(CONFIG.value)
    params, model_config, tokenizer = load_model(config)
    if FLAGS.checkpoint:
        params = restore_params(FLAGS.checkpoint)
    accuracy = accuracy_hook(config, model_config, tokenizer)(params)
    print(json.dumps({"checkpoint": FLAGS.checkpoint or config.model.pretrained,
                      "accuracy": accuracy}, indent=2))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
