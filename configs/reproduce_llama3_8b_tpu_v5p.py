"""The reproduction at the paper's scale: Llama-3-8B on a Cloud TPU v5p slice (documented, not run
in CI). The base run config is `configs/llama3_8b_tpu_v5p.py` (FSDP over every chip, bfloat16
activations, full remat); the stages and the grid are those of `reproduce_smollm2.py` with the
paper's orders of magnitude: a few hundred SFT steps per task, budgets up to a thousand complex
samples, a thousand test examples.

  python scripts/reproduce.py --config configs/reproduce_llama3_8b_tpu_v5p.py   # on every host

Every host writes the same findings arrays; the first host writes results.jsonl and the report.
"""

import importlib.util
from pathlib import Path

from headjax.app.reproduce.config import default_reproduce_config


def _run_config():
    path = Path(__file__).with_name("llama3_8b_tpu_v5p.py")
    spec = importlib.util.spec_from_file_location("llama3_8b_tpu_v5p", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = default_reproduce_config()
    c.out_dir = "runs/reproduce_llama3_8b"  # on storage every host sees
    c.doc = "runs/reproduce_llama3_8b/reproduction.md"
    c.base = _run_config()
    c.base.data.packing = False  # probes and evaluation score one example per row
    c.base.eval.max_new_tokens = 256
    c.findings.train_samples = 20_000
    c.findings.steps = 400
    c.findings.probe_samples = 256
    c.findings.probe_every = 50
    c.findings.k = 50
    c.grid.budgets = (16, 64, 256, 1024)
    c.grid.epochs = 3
    c.grid.preliminary_samples = 20_000
    c.grid.warm_steps = 200
    c.grid.eval_samples = 1000
    return c
