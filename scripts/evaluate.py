"""Accuracy per task of the pretrained model or a trained checkpoint.

  python scripts/evaluate.py --config configs/smollm2_quickstart.py \
      [--checkpoint runs/smollm2_quickstart/checkpoints]

Without --checkpoint the config's pretrained model is scored; with it, the newest good step of
that checkpoint directory (its params replace the pretrained ones; a LoRA run's are merged with
the config's `lora.alpha`). Prints the accuracies as
JSON; the completions go to `--out`/eval/step_000000.jsonl.
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from headjax.train.experiment import accuracy_hook, load_model

CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py).")
flags.DEFINE_string("checkpoint", None, "Checkpoint directory written by scripts/train.py.")
flags.DEFINE_string("out", "runs/evaluate", "Directory for eval/step_000000.jsonl completions.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from headjax.lora import restored_model_params
    from headjax.train.checkpoint import restore_params
    from headjax.train.config import validate

    config = validate(CONFIG.value)
    config.run_dir = FLAGS.out
    params, model_config, tokenizer = load_model(config)
    if FLAGS.checkpoint:
        params = restored_model_params(restore_params(FLAGS.checkpoint), config.lora.alpha)
    accuracy = accuracy_hook(config, model_config, tokenizer)(params, 0)
    print(json.dumps({"checkpoint": FLAGS.checkpoint or config.model.pretrained,
                      "accuracy": accuracy}, indent=2))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
