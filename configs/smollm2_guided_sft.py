"""Pattern-guided SFT of SmolLM2-135M-Instruct on a complex task with scarce data (the paper's
improvement, `headjax.app.guide`): 32 GSM8K-style word problems, preceded by a warm start on
256 basic-task examples mixed by the NNLS fit of the target's activation pattern on the basic
tasks' patterns (computed at the start on the base model; point `guide.patterns` at the
`findings/dap.npz` of a `scripts/reproduce.py` run to fit SFT-induced changes instead).

  python scripts/train.py --config configs/smollm2_guided_sft.py
  # head-targeted instead (10% of the heads, chosen by the target's pattern):
  python scripts/train.py --config configs/smollm2_guided_sft.py --config.guide.mixture=none \
      --config.guide.heads=pattern --config.run_dir=runs/smollm2_head_targeted

`run_dir/guide.json` records the mixture weights, the example counts and the trained heads.
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/smollm2_guided_sft"
    c.data.tasks = ("gsm_symbolic",)
    c.data.train_samples = 32
    c.data.max_len = 192
    c.model.answer_positions = 32  # vocabulary projection at answer positions only (exact)
    c.train.steps = 12
    c.train.batch_size = 8
    c.train.lr = 1e-4
    c.train.warmup_steps = 0
    c.checkpoint.every = 0
    c.eval.every = 0
    c.eval.samples = 48
    c.eval.max_new_tokens = 8
    c.eval.batch_size = 48
    c.heads.samples = 16
    c.heads.every = 0
    c.guide.basis = ("basic_arithmetic", "chain_sum", "products", "leg_counting")
    c.guide.mixture = "pattern"
    c.guide.schedule = "warm_start"
    c.guide.preliminary_samples = 256
    c.guide.probe_samples = 16
    c.guide.warm_steps = 32
    return c
