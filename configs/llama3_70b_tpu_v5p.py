"""Llama-3-70B SFT on a Cloud TPU v5p slice of 256 chips (v5p-512), documented, not run in CI.

70.6B parameters with float32 master weights, a bfloat16 first moment and a float32 second
moment are 0.71 TB of state: FSDP over 64 chips times 4-way tensor parallelism splits every
weight matrix 256 ways (2.8 GB per chip). Activations are bfloat16 with full layer
rematerialisation, and the 128k-token vocabulary projection runs 128 positions at a time. Launch
the same command on every host of the slice (multi-host start-up is automatic on TPU VMs):

  gcloud compute tpus tpu-vm ssh $TPU --worker=all --command \\
    "cd headjax && python scripts/train.py --config configs/llama3_70b_tpu_v5p.py"

Plan it first from any machine (docs/scaling.md):

  python scripts/train.py --config configs/llama3_70b_tpu_v5p.py --dry_run --devices 256 --chip v5p
"""

from headjax.train.config import default_config


def get_config():
    c = default_config()
    c.run_dir = "runs/llama3_70b"  # on storage every host sees
    c.model.pretrained = "/mnt/models/Meta-Llama-3-70B-Instruct"
    c.model.architecture = "llama3-70b"  # the shape --dry_run uses where the checkpoint is absent
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.train.rounding = "stochastic"  # bf16 copy unbiased: small SFT updates are not lost
    c.model.remat = "full"
    c.model.attention_impl = "fused"
    c.data.tasks = ("basic_arithmetic", "leg_counting")
    c.data.max_len = 512
    c.data.packing = True
    c.data.train_samples = 200_000
    c.train.steps = 1000
    c.train.batch_size = 256
    c.train.lr = 1e-5
    c.train.warmup_steps = 50
    c.train.weight_decay = 0.01
    c.train.opt_state_dtype = "bfloat16"
    c.train.loss_chunk = 128
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.mesh.tensor = 4
    c.checkpoint.every = 200
    c.checkpoint.keep = 2
    c.eval.every = 200
    c.eval.batch_size = 64
    c.heads.every = 100
    c.heads.samples = 64
    c.heads.batch_size = 16
    return c
