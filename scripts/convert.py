"""Convert a checkpoint to a headjax native checkpoint or a Hugging Face directory.

  python scripts/convert.py --input smollm2-135m-instruct --output runs/smollm2_native --to native
  python scripts/convert.py --input model.gguf --output exported_hf --to hf [--architecture llama]

--input is a registry name, a .gguf file, a Hugging Face checkpoint directory or a native one.
--output must be new or empty; `--overwrite` replaces what it holds.
"""

from __future__ import annotations

from absl import flags

from headjax.app import cli
from headjax.io.export import FAMILIES

flags.DEFINE_string("input", None, "Registry name, .gguf file, HF directory or native directory.")
flags.DEFINE_string("output", None, "Directory to write (new or empty unless --overwrite).")
flags.DEFINE_enum("to", "native", ["native", "hf"], "Output format.")
flags.DEFINE_string("dtype", "float32", "Parameter dtype of the output.")
flags.DEFINE_enum("architecture", None, sorted(FAMILIES),
                  "HF family for --to hf (default: the family whose features the model has).")
flags.DEFINE_bool("overwrite", False, "Replace the contents of an existing --output.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from headjax.io import export_hf, load_pretrained, save_native
    from headjax.io.output import check_output

    with cli.user_errors():
        check_output(FLAGS.output, overwrite=FLAGS.overwrite)
        params, config, tokenizer = load_pretrained(FLAGS.input, dtype=FLAGS.dtype)
    if FLAGS.to == "native":
        save_native(FLAGS.output, params, config, tokenizer, overwrite=FLAGS.overwrite)
    else:
        export_hf(FLAGS.output, params, config, tokenizer, architecture=FLAGS.architecture,
                  overwrite=FLAGS.overwrite)
    print(f"wrote {FLAGS.to} checkpoint to {FLAGS.output}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["input", "output"])
    cli.run(main)
