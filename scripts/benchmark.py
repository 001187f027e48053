"""Benchmark headjax against transformers PyTorch on SmolLM2-135M's architecture (CPU, fp32).

    python scripts/benchmark.py --sections=forward,sft,heads --output=/tmp/bench.json

Prints Markdown tables (the figures of docs/benchmarks.md); logic in `headjax.bench`.
"""

from __future__ import annotations

import json
import platform

from absl import app, flags

from headjax import cli
from headjax.bench import report, sections
from headjax.io.output import check_output

SECTIONS = ("forward", "sft", "heads")
FLAGS = flags.FLAGS
flags.DEFINE_list("sections", list(SECTIONS), f"Sections to run, among {SECTIONS}.")
flags.DEFINE_integer("repeats", 3, "Warm (post-compile) repeats per measurement; medians.")
flags.DEFINE_integer("batch", 8, "forward: batch size.")
flags.DEFINE_integer("seq", 64, "forward: sequence length.")
flags.DEFINE_integer("sft_batch", 8, "sft: batch size.")
flags.DEFINE_integer("sft_seq", 128, "sft: sequence length.")
flags.DEFINE_integer("head_samples", 256, "heads: samples of the task.")
flags.DEFINE_integer("head_batch", 16, "heads: batch size.")
flags.DEFINE_integer("head_seq", 64, "heads: sequence length.")
flags.DEFINE_integer("ablation_heads", 6, "heads: heads timed for the naive method.")
flags.DEFINE_string("output", None, "Optional JSON file for the raw results (new unless "
                    "--overwrite).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output file.")


def main(argv):
    del argv
    unknown = set(FLAGS.sections) - set(SECTIONS)
    if unknown:
        raise app.UsageError(f"--sections: unknown {sorted(unknown)}; choose from {SECTIONS}")
    if FLAGS.output:
        with cli.user_errors():
            check_output(FLAGS.output, overwrite=FLAGS.overwrite)
    results = {"machine": platform.processor() or platform.machine()}
    if "forward" in FLAGS.sections:
        results["forward"] = sections.forward_section(FLAGS.batch, FLAGS.seq, FLAGS.repeats)
        print(f"## forward, batch {FLAGS.batch} x {FLAGS.seq}\n"
              f"{report.forward_table(results['forward'])}\n", flush=True)
    if "sft" in FLAGS.sections:
        results["sft"] = sections.sft_section(FLAGS.sft_batch, FLAGS.sft_seq, FLAGS.repeats)
        print(f"## SFT step, batch {FLAGS.sft_batch} x {FLAGS.sft_seq}\n"
              f"{report.sft_table(results['sft'])}\n", flush=True)
    if "heads" in FLAGS.sections:
        results["heads"] = sections.heads_section(FLAGS.head_samples, FLAGS.head_batch,
                                                  FLAGS.head_seq, FLAGS.repeats,
                                                  FLAGS.ablation_heads)
        print(f"## activation pattern, {FLAGS.head_samples} samples x {FLAGS.head_seq}\n"
              f"{report.heads_table(results['heads'])}\n", flush=True)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    cli.run(main)
