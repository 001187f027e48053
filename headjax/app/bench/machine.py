"""What the benchmarked machine is: the CPU's vector extensions, the accelerator's peak bf16 rate,
and model FLOPs utilisation against it.

Timings depend on these (a CPU with AVX-512 or AMX runs f32/bf16 matmuls far faster than one with
only AVX2), so every reported figure carries them.
"""

from __future__ import annotations

import platform
from pathlib import Path

# The /proc/cpuinfo flags that change matmul speed, in the order they are reported.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw",
                "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                "amx_int8", "asimd", "sve", "sve2")

# Dense bf16 peak FLOP/s per chip (vendor data sheets, no sparsity), keyed by the start of
# `jax.devices()[0].device_kind`; the longest matching key wins.
PEAK_BF16_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # SXM
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA GH200": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5": 459e12,  # v5p
    "TPU v6 lite": 918e12,  # v6e (Trillium)
}


def cpu_description(cpuinfo: str | None = None) -> dict:
    """{"model": CPU model name, "vector_extensions": the `VECTOR_FLAGS` it has, "cores": logical
    CPUs}. `cpuinfo`: the text of /proc/cpuinfo (read when None; empty where there is none)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    fields: dict[str, str] = {}
    cores = 0
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            cores += 1
        fields.setdefault(key, value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "vector_extensions": [f for f in VECTOR_FLAGS if f in flags], "cores": cores}


def peak_flops(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of `device_kind` from `PEAK_BF16_FLOPS`, None when unknown."""
    matches = [key for key in PEAK_BF16_FLOPS if device_kind.startswith(key)]
    return PEAK_BF16_FLOPS[max(matches, key=len)] if matches else None


def utilization(flops: float, seconds: float, peak: float | None) -> float | None:
    """flops / seconds / peak (a fraction of the chip's peak); None without a known peak."""
    if peak is None:
        return None
    if flops <= 0 or seconds <= 0 or peak <= 0:
        raise ValueError(f"utilization: flops {flops}, seconds {seconds}, peak {peak} must be > 0")
    return flops / seconds / peak
