"""Llama-3-8B SFT on a Cloud TPU v5p slice (documented, not run in CI).

Memory: 8B params in float32 with AdamW is ~128 GB of state (params + 2 moments), sharded by
FSDP over every chip (`mesh.fsdp = -1`); `mesh.tensor` (1-4) additionally splits heads, kv heads,
MLP and vocab when the per-chip batch gets small. Activations are bfloat16 with full layer
rematerialisation. Multi-host start-up is automatic on TPU VMs (`distributed.mode = "auto"`).
Launch the same command on every host of the slice, e.g.

  gcloud compute tpus tpu-vm ssh $TPU --worker=all --command \
    "cd headjax && python scripts/train.py --config configs/llama3_8b_tpu_v5p.py"

`model.pretrained` must point at a local Hugging Face checkpoint directory (config.json +
safetensors) present on every host. Plan it first from any machine (no weights needed,
docs/scaling.md):

  python scripts/train.py --config configs/llama3_8b_tpu_v5p.py --dry_run --devices 64 --chip v5p
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/llama3_8b"  # on storage every host sees
    c.model.pretrained = "/mnt/models/Meta-Llama-3-8B-Instruct"
    c.model.architecture = "llama3-8b"  # the shape --dry_run uses where the checkpoint is absent
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.train.rounding = "stochastic"  # bf16 copy unbiased: small SFT updates are not lost
    c.model.remat = "full"
    c.model.attention_impl = "fused"
    c.data.tasks = ("basic_arithmetic", "leg_counting")
    c.data.max_len = 512
    c.data.packing = True
    c.data.train_samples = 200_000
    c.train.steps = 2000
    c.train.batch_size = 256
    c.train.lr = 2e-5
    c.train.warmup_steps = 100
    c.train.weight_decay = 0.01
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.mesh.tensor = 4
    c.checkpoint.every = 200
    c.checkpoint.keep = 3
    c.eval.every = 200
    c.eval.batch_size = 128
    c.heads.every = 100
    c.heads.samples = 64
    return c
