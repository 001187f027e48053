"""SFT of SmolLM2-135M-Instruct on a complex task (GSM8K-style word problems), with the basic
tasks it combines probed alongside, to fit its pattern change from theirs (the paper's Finding 2:
`python scripts/analyze.py --run_dir runs/smollm2_complex_task --target gsm_symbolic
--basis basic_arithmetic,chain_sum,products`)."""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/smollm2_complex_task"
    c.data.tasks = ("gsm_symbolic",)
    c.data.max_len = 256
    c.model.answer_positions = 32  # vocabulary projection at answer positions only (exact)
    c.data.train_samples = 1000
    c.train.steps = 400
    c.train.batch_size = 16
    c.train.lr = 5e-5
    c.train.warmup_steps = 20
    c.checkpoint.every = 100
    c.eval.every = 100
    c.eval.max_new_tokens = 32
    c.heads.tasks = ("gsm_symbolic", "basic_arithmetic", "chain_sum", "products")
    c.heads.every = 25
    return c
