"""Quickstart on Gemma 3 270M: the SmolLM2 quickstart's SFT (letter_counting, 40 steps of 8
examples) on a second model family.

Gemma 3 270M is the pretrained (not instruction-tuned) model, its Q4_K_M weights dequantised to
float32; prompts use Gemma's turn format (<start_of_turn>user ... <start_of_turn>model) and
answers end with <end_of_turn>. The pretrained model has not learned to end a turn: before SFT
<end_of_turn> costs it about 32 nats (the answer digit about 5-7), so the step-0 loss is near 19,
and it answers by repeating the question. Its 262k-token vocabulary makes the logits 5.3x wider
than SmolLM2's: a step runs as 2 micro-batches of 4, evaluation and head scoring in batches of 8
(peak memory about 11 GB).
Patterns are recorded at steps 0, 10, 20, 30 and 40 (run_dir/patterns/step_*.npz).
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/gemma3_quickstart"
    c.model.pretrained = "gemma3-270m"
    c.data.tasks = ("letter_counting",)
    c.data.max_len = 96
    c.model.answer_positions = 32  # vocabulary projection at answer positions only (exact)
    c.data.train_samples = 1000
    c.train.steps = 40
    c.train.batch_size = 8
    c.train.grad_accum = 2
    c.train.lr = 1e-4
    c.train.schedule = "cosine"
    c.train.warmup_steps = 5
    c.train.grad_clip = 1.0
    c.checkpoint.every = 20
    c.checkpoint.keep = 1
    c.eval.every = 20
    c.eval.samples = 32
    c.eval.max_new_tokens = 8
    c.eval.batch_size = 8
    c.heads.samples = 16
    c.heads.batch_size = 8
    c.heads.every = 10
    return c
