"""Benchmark headjax: against transformers PyTorch on SmolLM2-135M's architecture (CPU, fp32), and
a Llama-class bf16 SFT step on an accelerator.

    python scripts/benchmark.py --sections=forward,sft,heads --output=/tmp/bench.json
    python scripts/benchmark.py --sections=cpu_ratio --pairs=7
    python scripts/benchmark.py --sections=lora --lora_rank=8   # LoRA step beside full SFT
    python scripts/benchmark.py --sections=accelerator       # one GPU or TPU chip, < 8 minutes
    python scripts/benchmark.py --sections=profile           # where one SFT step's time goes
    python scripts/benchmark.py --sections=profile --profile_program=pattern   # the pattern's

Prints Markdown tables (the figures of docs/benchmarks.md); logic in `headjax.app.bench`. The
`--model_*` flags resize the benchmarked model (e.g. a tiny one to try a section on a laptop) or
set its answer-only projection (`--model_answer_positions`);
`--accel_*` flags resize the Llama-3.2-1B-shaped model of the accelerator and tracking sections
(tracking: the accelerator section's pattern-tracking share alone, e.g. on a CPU with a smaller
model).
"""

from __future__ import annotations

import json

from absl import app, flags

from headjax.app import cli
from headjax.app.bench import accelerator, profile, report, sections
from headjax.app.bench.machine import cpu_description
from headjax.app.bench.paired import cpu_ratio_section
from headjax.app.bench.sft import LORA, bench_config
from headjax.io.output import check_output
from headjax.io.pretrained import read_model_config
from headjax.lora import lora_spec

SECTIONS = ("forward", "sft", "lora", "heads", "cpu_ratio", "tracking", "accelerator", "profile")
DEFAULT_SECTIONS = ("forward", "sft", "heads")
MODEL_FIELDS = (  # ModelConfig fields the --model_* and --accel_* flags override
    "vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "ffn_dim",
    "answer_positions")
FLAGS = flags.FLAGS
flags.DEFINE_list("sections", list(DEFAULT_SECTIONS), f"Sections to run, among {SECTIONS}.")
flags.DEFINE_integer("repeats", 3, "Warm (post-compile) repeats per measurement; medians.")
flags.DEFINE_integer("batch", 8, "forward: batch size.")
flags.DEFINE_integer("seq", 64, "forward: sequence length.")
flags.DEFINE_integer("sft_batch", 8, "sft, lora, cpu_ratio: batch size.")
flags.DEFINE_integer("sft_seq", 128, "sft, lora, cpu_ratio: sequence length.")
flags.DEFINE_integer("lora_rank", LORA["rank"], "lora: adapter rank r.")
flags.DEFINE_float("lora_alpha", LORA["alpha"], "lora: alpha (scale alpha / r).")
flags.DEFINE_list("lora_targets", LORA["targets"], "lora: adapted projections among "
                  "q, k, v, o, gate, up, down.")
flags.DEFINE_float("lora_dropout", LORA["dropout"], "lora: dropout on the adapter input.")
flags.DEFINE_integer("pairs", 7, "cpu_ratio: interleaved (headjax, PyTorch) step pairs, >= 5.")
flags.DEFINE_integer("head_samples", 256, "heads: samples of the task.")
flags.DEFINE_integer("head_batch", 16, "heads: batch size.")
flags.DEFINE_integer("head_seq", 64, "heads: sequence length.")
flags.DEFINE_string("head_model", "", "heads: time this model's architecture (a name or path "
                    "load_pretrained accepts, e.g. gemma3-270m) instead of SmolLM2-135M's.")
flags.DEFINE_integer("ablation_heads", 6, "heads: heads timed for the naive method.")
for field in MODEL_FIELDS:
    flags.DEFINE_integer(f"model_{field}", None, f"sft, lora, cpu_ratio, profile, heads: "
                         f"override SmolLM2's {field}.")
    flags.DEFINE_integer(f"accel_{field}", None, f"accelerator: override Llama-1B's {field}.")
flags.DEFINE_string("accel_dtype", "bfloat16", "accelerator: compute dtype.")
flags.DEFINE_enum("accel_attention", "xla", accelerator.ATTENTION_IMPLS,
                  "accelerator: attention of the pattern and tracking figures (the SFT step is "
                  "timed with both).")
flags.DEFINE_integer("accel_batch", 4, "accelerator: batch size.")
flags.DEFINE_integer("accel_seq", 1024, "accelerator: sequence length.")
flags.DEFINE_integer("tracking_steps", 50, "accelerator, tracking: SFT steps with and without "
                     "patterns.")
flags.DEFINE_integer("probe_seq", 256, "accelerator, tracking: sequence length of the probes.")
flags.DEFINE_float("peak_tflops", None, "accelerator: the chip's peak TFLOP/s (default: the "
                   "table in headjax/app/bench/machine.py by device kind).")
flags.DEFINE_string("trace_dir", "/tmp/headjax_profile", "profile: where the trace of one run "
                    "of --profile_program is written.")
flags.DEFINE_enum("profile_program", "sft", profile.PROGRAMS, "profile: the SFT step (batch "
                  "--sft_batch x --sft_seq), the forward loss or the activation pattern (both "
                  "batch --head_batch x --head_seq, as the heads section).")
flags.DEFINE_string("output", None, "Optional JSON file for the raw results (new unless "
                    "--overwrite).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output file.")


def _overrides(prefix: str) -> dict:
    return {field: getattr(FLAGS, f"{prefix}_{field}") for field in MODEL_FIELDS
            if getattr(FLAGS, f"{prefix}_{field}") is not None}


def _lora() -> dict:
    return {"rank": FLAGS.lora_rank, "alpha": FLAGS.lora_alpha,
            "targets": list(FLAGS.lora_targets), "dropout": FLAGS.lora_dropout}


def _accelerator_config():
    return accelerator.LLAMA_1B.replace(dtype=FLAGS.accel_dtype,
                                        attention_impl=FLAGS.accel_attention,
                                        **_overrides("accel"))


def _usage_error() -> str | None:
    """One line naming the flag a user got wrong, or None."""
    unknown = set(FLAGS.sections) - set(SECTIONS)
    if unknown:
        return f"--sections: unknown {sorted(unknown)}; choose from {SECTIONS}"
    if "cpu_ratio" in FLAGS.sections and FLAGS.pairs < 5:
        return f"--pairs: need at least 5 for a median with a spread, got {FLAGS.pairs}"
    if "heads" in FLAGS.sections and FLAGS.head_model:
        try:
            read_model_config(FLAGS.head_model)
        except (ValueError, OSError) as error:
            return f"--head_model: {error}"
    if "lora" in FLAGS.sections:
        try:
            lora_spec(**_lora())
        except ValueError as error:
            return f"--{error}".replace("--lora.", "--lora_", 1)
    for prefix in ("model", "accel"):
        try:
            (bench_config(_overrides("model")) if prefix == "model"
             else _accelerator_config())
        except ValueError as error:
            return f"--{prefix}_*: {error}"
    return None


def main(argv):
    del argv
    error = _usage_error()
    if error:
        raise app.UsageError(error)
    if FLAGS.output:
        with cli.user_errors():
            check_output(FLAGS.output, overwrite=FLAGS.overwrite)
    results = {"cpu": cpu_description()}
    model = _overrides("model")
    if "forward" in FLAGS.sections:
        results["forward"] = sections.forward_section(FLAGS.batch, FLAGS.seq, FLAGS.repeats)
        print(f"## forward, batch {FLAGS.batch} x {FLAGS.seq}\n"
              f"{report.forward_table(results['forward'])}\n", flush=True)
    if "sft" in FLAGS.sections:
        results["sft"] = sections.sft_section(FLAGS.sft_batch, FLAGS.sft_seq, FLAGS.repeats,
                                              model_overrides=model)
        print(f"## SFT step, batch {FLAGS.sft_batch} x {FLAGS.sft_seq}\n"
              f"{report.sft_table(results['sft'])}\n", flush=True)
    if "lora" in FLAGS.sections:
        results["lora"] = sections.lora_section(FLAGS.sft_batch, FLAGS.sft_seq, FLAGS.repeats,
                                                _lora(), model_overrides=model)
        print(f"## LoRA step beside full SFT, batch {FLAGS.sft_batch} x {FLAGS.sft_seq}, "
              f"rank {FLAGS.lora_rank}, targets {','.join(FLAGS.lora_targets)}\n"
              f"{report.lora_table(results['lora'])}\n", flush=True)
    if "cpu_ratio" in FLAGS.sections:
        results["cpu_ratio"] = cpu_ratio_section(FLAGS.sft_batch, FLAGS.sft_seq, FLAGS.pairs,
                                                 model_overrides=model)
        print(f"## SFT step ratio, interleaved pairs, batch {FLAGS.sft_batch} x {FLAGS.sft_seq}\n"
              f"{report.cpu_ratio_table(results['cpu_ratio'])}\n", flush=True)
    if "heads" in FLAGS.sections:
        results["heads"] = sections.heads_section(FLAGS.head_samples, FLAGS.head_batch,
                                                  FLAGS.head_seq, FLAGS.repeats,
                                                  FLAGS.ablation_heads, FLAGS.head_model,
                                                  model)
        print(f"## activation pattern of {results['heads']['model']}, {FLAGS.head_samples} "
              f"samples x {FLAGS.head_seq}\n"
              f"{report.heads_table(results['heads'])}\n", flush=True)
    if "profile" in FLAGS.sections:
        program = FLAGS.profile_program
        batch, seq = ((FLAGS.sft_batch, FLAGS.sft_seq) if program == "sft"
                      else (FLAGS.head_batch, FLAGS.head_seq))
        results["profile"] = profile.profile_section(bench_config(model), batch, seq,
                                                     FLAGS.trace_dir, program=program)
        print(f"## where the time of one {program} run goes, batch {batch} x {seq}\n"
              f"{report.profile_table(results['profile'])}\n", flush=True)
    if "tracking" in FLAGS.sections:  # the accelerator section's tracking figures alone
        config = _accelerator_config()
        prepared = accelerator.prepare_sft(config, FLAGS.accel_batch, FLAGS.accel_seq)
        results["tracking"] = accelerator.tracking_figures(config, prepared, FLAGS.tracking_steps,
                                                           FLAGS.probe_seq)
        print(f"## pattern tracking, batch {FLAGS.accel_batch} x {FLAGS.accel_seq}\n"
              f"{report.tracking_line(results['tracking'], FLAGS.probe_seq)}\n", flush=True)
    if "accelerator" in FLAGS.sections:
        peak = None if FLAGS.peak_tflops is None else FLAGS.peak_tflops * 1e12
        results["accelerator"] = accelerator.accelerator_section(
            _accelerator_config(), FLAGS.accel_batch, FLAGS.accel_seq, FLAGS.repeats,
            FLAGS.tracking_steps, FLAGS.probe_seq, peak,
            progress=lambda part, figures: print(f"accelerator {part}: {json.dumps(figures)}",
                                                 flush=True))
        print(f"## accelerator\n{report.accelerator_table(results['accelerator'])}\n",
              flush=True)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    cli.run(main)
