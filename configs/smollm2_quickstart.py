"""Quickstart: SFT of SmolLM2-135M-Instruct on one basic task, on 2 CPU cores in minutes.

letter_counting ("how many times does the letter x appear in ...", bare-number answers) is one
the base model gets partly right (about 19% of 32 held-out prompts: it answers in sentences and
often miscounts) and improves on within tens of steps (about 28% after 30 steps at this
learning rate, measured). Accuracy is measured at steps 0, 20 and 40; the task's head activation
pattern is recorded at steps 0, 10, 20, 30 and 40 (run_dir/patterns/step_*.npz).
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/smollm2_quickstart"
    c.model.pretrained = "smollm2-135m-instruct"
    c.data.tasks = ("letter_counting",)
    c.data.max_len = 96
    c.data.train_samples = 1000
    c.train.steps = 40
    c.train.batch_size = 8
    c.train.lr = 1e-4
    c.train.schedule = "cosine"
    c.train.warmup_steps = 5
    c.train.grad_clip = 1.0
    c.checkpoint.every = 20
    c.checkpoint.keep = 1
    c.eval.every = 20
    c.eval.samples = 32
    c.eval.max_new_tokens = 8
    c.eval.batch_size = 32
    c.heads.samples = 16
    c.heads.batch_size = 16
    c.heads.every = 10
    return c
