"""SFT of SmolLM2-135M-Instruct on a mixture of basic tasks, tracking each task's pattern."""

from headjax.train.config import default_config

TASKS = ("basic_arithmetic", "chain_sum", "products", "word_sorting", "leg_counting")


def get_config():
    c = default_config()
    c.run_dir = "runs/smollm2_basic_tasks"
    c.data.tasks = TASKS
    c.data.weights = (1.0,) * len(TASKS)
    c.data.max_len = 128
    c.model.answer_positions = 32  # vocabulary projection at answer positions only (exact)
    c.data.train_samples = 1000
    c.train.steps = 300
    c.train.batch_size = 16
    c.train.lr = 5e-5
    c.train.warmup_steps = 20
    c.checkpoint.every = 100
    c.eval.every = 100
    c.heads.every = 25
    return c
