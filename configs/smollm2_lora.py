"""LoRA SFT of SmolLM2-135M-Instruct on letter_counting (the quickstart's task and schedule):
rank-8 adapters on q, k, v and o, the base frozen, the optimizer holding the adapters' state only.

  python scripts/train.py --config configs/smollm2_lora.py
  # head-LoRA: adapters on the 10% of heads with the highest activation scores on the task
  python scripts/train.py --config configs/smollm2_lora.py --config.guide.heads=pattern \
      --config.run_dir=runs/smollm2_head_lora
  # its baseline: as many random heads
  python scripts/train.py --config configs/smollm2_lora.py --config.guide.heads=random \
      --config.run_dir=runs/smollm2_head_lora_random

Writes run_dir/final_model (the merged model, a directory `load_pretrained` reads) and
run_dir/final_adapter (a PEFT folder: `peft.PeftModel.from_pretrained(base, folder)` on the
transformers model). guide.json records the trained heads and the adapters' parameter count.
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/smollm2_lora"
    c.model.pretrained = "smollm2-135m-instruct"
    c.data.tasks = ("letter_counting",)
    c.data.max_len = 96
    c.model.answer_positions = 32  # vocabulary projection at answer positions only (exact)
    c.data.train_samples = 1000
    c.train.steps = 40
    c.train.batch_size = 8
    c.train.lr = 1e-3  # adapters start at zero and take a larger step than full SFT
    c.train.warmup_steps = 5
    c.checkpoint.every = 20
    c.checkpoint.keep = 1
    c.eval.every = 20
    c.eval.samples = 32
    c.eval.max_new_tokens = 8
    c.eval.batch_size = 32
    c.heads.samples = 16
    c.heads.every = 10
    c.lora.enabled = True
    c.lora.rank = 8
    c.lora.alpha = 16.0
    c.lora.targets = ("q", "k", "v", "o")
    return c
