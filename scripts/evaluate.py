"""Accuracy per task of the pretrained model or a trained checkpoint.

  python scripts/evaluate.py --config configs/smollm2_quickstart.py \
      [--checkpoint runs/smollm2_quickstart/checkpoints] [--out runs/evaluate]

Without --checkpoint the config's pretrained model is scored; with it, the newest good step of
that checkpoint directory (its params replace the pretrained ones; a LoRA run's are merged with
the config's `lora.alpha`). Prints the accuracies as JSON; the completions go to
`--out`/eval/step_000000.jsonl, which an earlier evaluation's file must not hold unless
`--overwrite`.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from headjax.app import cli
from headjax.app.experiment import accuracy_hook, check_inputs, load_model

CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py).",
                                         lock_config=True)
flags.DEFINE_string("checkpoint", None, "Checkpoint directory written by scripts/train.py.")
flags.DEFINE_string("out", "runs/evaluate", "Directory for eval/step_000000.jsonl completions.")
flags.DEFINE_bool("overwrite", False, "Replace an earlier evaluation's completions in --out.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from headjax.io.output import check_output
    from headjax.lora import restored_model_params
    from headjax.train.checkpoint import restore_params

    config = CONFIG.value
    config.run_dir = FLAGS.out
    with cli.user_errors():
        check_inputs(config)
        check_output(Path(FLAGS.out) / "eval" / "step_000000.jsonl", overwrite=FLAGS.overwrite)
        if FLAGS.checkpoint and not Path(FLAGS.checkpoint).is_dir():
            raise FileNotFoundError(f"--checkpoint: {FLAGS.checkpoint}: no such directory")
        params, model_config, tokenizer = load_model(config)
        if FLAGS.checkpoint:
            params = restored_model_params(restore_params(FLAGS.checkpoint), config.lora.alpha)
    accuracy = accuracy_hook(config, model_config, tokenizer)(params, 0)
    print(json.dumps({"checkpoint": FLAGS.checkpoint or config.model.pretrained,
                      "accuracy": accuracy}, indent=2))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    cli.run(main)
