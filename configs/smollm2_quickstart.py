"""Quickstart: SFT of SmolLM2-135M-Instruct on one basic task, on 2 CPU cores in minutes.

letter_counting ("how many times does the letter x appear in ...", bare-number answers).
Measured (32 held-out prompts): accuracy 19% at step 0 (the base model answers in sentences and
often miscounts), 28% at steps 20 and 40. The gain is the bare-number format plus the answer
prior: by step 20 every completion is "1", the most common answer; 40 steps of 8 examples teach
no counting. The head activation pattern moves far from the base one within 10 steps (its
correlation with step 0 falls to about 0.4). The default basic_arithmetic is too hard for this
model: 0% before and after 40 steps although the answers become bare numbers.
Patterns are recorded at steps 0, 10, 20, 30 and 40 (run_dir/patterns/step_*.npz).
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/smollm2_quickstart"
    c.model.pretrained = "smollm2-135m-instruct"
    c.data.tasks = ("letter_counting",)
    c.data.max_len = 96
    c.model.answer_positions = 32  # vocabulary projection at answer positions only (exact)
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
