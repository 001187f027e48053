"""Quickstart: SFT of SmolLM2-135M-Instruct on one basic task, on 2 CPU cores in minutes.

Shows eval accuracy rising and the task's head activation pattern changing
(run_dir/patterns/step_*.npz at steps 0, 20, 40, 60).
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/smollm2_quickstart"
    c.model.pretrained = "smollm2-135m-instruct"
    c.data.tasks = ("basic_arithmetic",)
    c.data.max_len = 96
    c.data.train_samples = 1000
    c.train.steps = 60
    c.train.batch_size = 8
    c.train.lr = 1e-4
    c.train.schedule = "cosine"
    c.train.warmup_steps = 5
    c.train.grad_clip = 1.0
    c.checkpoint.every = 30
    c.checkpoint.keep = 1
    c.eval.every = 30
    c.eval.samples = 64
    c.eval.max_new_tokens = 8
    c.heads.samples = 16
    c.heads.batch_size = 16
    c.heads.every = 20
    return c
