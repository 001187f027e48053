"""SFT of SmolLM2-135M-Instruct on a composite task, with its basic tasks probed alongside, to
watch the complex task's pattern form from the basic ones (the paper's combination analysis)."""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/smollm2_complex_task"
    c.data.tasks = ("chain_sum",)
    c.data.max_len = 192
    c.data.train_samples = 4000
    c.train.steps = 400
    c.train.batch_size = 16
    c.train.lr = 5e-5
    c.train.warmup_steps = 20
    c.checkpoint.every = 100
    c.eval.every = 100
    c.eval.max_new_tokens = 32
    c.heads.tasks = ("chain_sum", "basic_arithmetic", "leg_counting")
    c.heads.every = 25
    return c
