"""Llama-3.2-1B SFT on one host with 8 GPUs (H100 80 GB), documented, not run in CI.

FSDP over the 8 GPUs (`mesh.fsdp = 8`): float32 master weights and AdamW moments (16 GB) are
split 8 ways, activations are bfloat16 with dot-product rematerialisation, and the 128k-token
vocabulary projection runs 256 positions at a time (`train.loss_chunk`). One process drives all
8 GPUs:

  python scripts/train.py --config configs/llama3_1b_gpu.py

Plan it first from any machine (no GPU, no weights; docs/scaling.md):

  python scripts/train.py --config configs/llama3_1b_gpu.py --dry_run --chip h100
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/llama3_1b"
    c.model.pretrained = "/mnt/models/Llama-3.2-1B-Instruct"
    c.model.architecture = "llama3.2-1b"  # the shape --dry_run uses where the checkpoint is absent
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.train.rounding = "stochastic"  # bf16 copy unbiased: small SFT updates are not lost
    c.model.remat = "dots"
    c.model.attention_impl = "fused"
    c.data.tasks = ("basic_arithmetic", "leg_counting")
    c.data.max_len = 1024
    c.data.packing = True
    c.data.train_samples = 50_000
    c.train.steps = 1000
    c.train.batch_size = 64
    c.train.lr = 2e-5
    c.train.warmup_steps = 50
    c.train.weight_decay = 0.01
    c.train.loss_chunk = 256
    c.mesh.data = 1
    c.mesh.fsdp = 8
    c.mesh.tensor = 1
    c.checkpoint.every = 200
    c.eval.every = 200
    c.eval.batch_size = 64
    c.heads.every = 100
    c.heads.samples = 64
    return c
