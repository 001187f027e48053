"""Reproduce the paper's findings and SFT improvements on a real model; writes the report.

  python scripts/reproduce.py --config configs/reproduce_smollm2.py \
      [--stages findings,measures,grid,report] ["--config.grid.seeds=(0,1,2)"]
  python scripts/reproduce.py --config configs/reproduce_smollm2.py --stages targets,pilot,power

Resumable: finished findings runs (per task and seed of `findings.seeds`) and grid cells are
kept under `out_dir` and skipped; a killed run restarts from its own checkpoints. See
`headjax.app.reproduce`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
from absl import flags
from ml_collections import config_flags

from headjax.app import cli
from headjax.app.reproduce.runner import DEFAULT_STAGES, STAGES, check_inputs, reproduce

CONFIG = config_flags.DEFINE_config_file("config", None, "Reproduction config file.",
                                         lock_config=True)
STAGES_FLAG = flags.DEFINE_list("stages", list(DEFAULT_STAGES), f"Stages to run, of {STAGES}.")


def main(argv):
    del argv
    with cli.user_errors():
        check_inputs(CONFIG.value, tuple(STAGES_FLAG.value))
    # Every grid run compiles the same train step afresh: reuse compilations across runs.
    jax.config.update("jax_compilation_cache_dir",
                      str(Path(CONFIG.value.out_dir) / "compilation_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("headjax").setLevel(logging.INFO)
    path = reproduce(CONFIG.value, tuple(STAGES_FLAG.value))
    if path is not None:
        print(f"report: {path}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    cli.run(main)
