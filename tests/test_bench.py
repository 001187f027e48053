"""The benchmark's machinery: interleaved pairs and their statistics, the machine description, the
chip table and MFU, and the cpu_ratio and accelerator sections end to end on a tiny model (CPU).
Timings here are not benchmarks; only structure and internal consistency are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from headjax.app.bench import accelerator, report
from headjax.app.bench.machine import cpu_description, peak_flops, utilization
from headjax.app.bench.paired import (
    cpu_ratio_section,
    interleaved_pairs,
    pair_orders,
    ratio_statistics,
)

TINY = dict(vocab_size=256, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
            ffn_dim=64)


def test_pair_orders_alternate_who_runs_first():
    assert pair_orders(5) == [(0, 1), (1, 0), (0, 1), (1, 0), (0, 1)]


def test_interleaved_pairs_call_each_side_once_per_pair_in_alternating_order():
    calls = []

    def side(name, seconds):
        def run():
            calls.append(name)
            return seconds.pop(0)
        return run

    samples = interleaved_pairs(side("a", [1.0, 2.0, 3.0, 4.0]),
                                side("b", [10.0, 20.0, 30.0, 40.0]), 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    # Each sample pairs the i-th call of a with the i-th call of b, whatever ran first.
    assert samples == [(1.0, 10.0), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)]
    with pytest.raises(ValueError, match="pairs"):
        interleaved_pairs(side("a", []), side("b", []), 0)


def test_ratio_statistics_on_known_numbers():
    stats = ratio_statistics([(1, 2), (3, 3), (2, 1), (4, 2), (1, 4)])  # .5 1 2 2 .25
    assert stats["ratios"] == [0.5, 1.0, 2.0, 2.0, 0.25]
    assert (stats["pairs"], stats["median"], stats["min"], stats["max"]) == (5, 1.0, 0.25, 2.0)
    assert (stats["q1"], stats["q3"]) == (0.5, 2.0)
    even = ratio_statistics([(1, 1), (2, 1), (3, 1), (4, 1)])
    assert even["median"] == 2.5 and even["q1"] == 1.75 and even["q3"] == 3.25
    with pytest.raises(ValueError):
        ratio_statistics([])


def test_cpu_description_reads_the_vector_extensions():
    text = ("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse4_2 avx avx2 fma "
            "avx512f amx_bf16 amx_tile\n\nprocessor\t: 1\nmodel name\t: Some CPU\n"
            "flags\t\t: fpu sse4_2 avx avx2 fma avx512f amx_bf16 amx_tile\n")
    cpu = cpu_description(text)
    assert cpu == {"model": "Some CPU", "cores": 2,
                   "vector_extensions": ["sse4_2", "avx", "avx2", "fma", "avx512f", "amx_tile",
                                         "amx_bf16"]}
    assert cpu_description("processor : 0\nFeatures : fp asimd sve\n")["vector_extensions"] == [
        "asimd", "sve"]
    json.dumps(cpu_description())  # this machine's, JSON-ready


def test_peak_flops_by_device_kind_and_utilization():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("TPU v5 lite") == 197e12 and peak_flops("TPU v5") == 459e12
    assert peak_flops("cpu") is None
    assert utilization(4e12, 2.0, 4e12) == 0.5
    assert utilization(1.0, 1.0, None) is None
    with pytest.raises(ValueError):
        utilization(1.0, 0.0, 1.0)


def test_cpu_ratio_section_pairs_two_worker_processes():
    pytest.importorskip("torch")
    result = cpu_ratio_section(2, 8, 5, model_overrides=TINY)
    samples = np.array(result["samples_s"])
    assert samples.shape == (5, 2) and (samples > 0).all()
    assert result["ratio"] == ratio_statistics(result["samples_s"])
    assert result["ratio"]["min"] <= result["ratio"]["median"] <= result["ratio"]["max"]
    assert set(result["peak_rss_mib"]) == {"headjax", "torch_sdpa"}
    assert result["cpu"]["cores"] >= 1
    assert "vector extensions" in report.cpu_ratio_table(result)
    with pytest.raises(ValueError, match="--pairs"):
        cpu_ratio_section(2, 8, 4, model_overrides=TINY)


def test_lora_section_runs_both_steps_in_their_own_processes():
    from headjax.app.bench.sections import lora_section
    from headjax.app.bench.sft import bench_config
    from headjax.lora import lora_spec, trainable_count
    from headjax.model import init

    lora = {"rank": 2, "targets": ["q", "v", "down"]}
    result = lora_section(2, 8, 2, lora, model_overrides=TINY)
    steps = result["steps"]
    assert set(steps) == {"headjax", "headjax_lora"}
    for name, r in steps.items():
        assert r["framework"] == name and len(r["runs_s"]) == 2 and r["warm_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(16 / r["warm_s"])
        assert r["peak_rss_mib"] > 0
    assert result["lora"] == {"rank": 2, "alpha": 16.0, "targets": ["q", "v", "down"],
                              "dropout": 0.0}
    # 2 layers x (q: 32x2 + 2x32, v: 32x2 + 2x16, down: 64x2 + 2x32)
    assert result["trained_params"]["headjax_lora"] == 2 * (128 + 96 + 192) == trainable_count(
        bench_config(TINY), lora_spec(2, 16.0, ("q", "v", "down")))
    params = init(jax.random.key(0), bench_config(TINY))  # SmolLM2's tied embeddings
    assert result["trained_params"]["headjax"] == sum(p.size for p in jax.tree.leaves(params))
    table = report.lora_table(result)
    assert "| full SFT |" in table and "| LoRA |" in table and "1.00x" in table


def test_accelerator_section_end_to_end_on_cpu():
    config = accelerator.LLAMA_1B.replace(**TINY)
    peak = 1e12  # above any 2-core CPU's rate, so that MFU is a fraction
    parts = []
    result = accelerator.accelerator_section(config, 2, 16, 2, tracking_steps=4, probe_seq=8,
                                             peak=peak,
                                             progress=lambda part, f: parts.append((part, f)))
    stochastic = f"xla, {accelerator.STOCHASTIC}"
    assert parts == [("sft/xla", result["sft"]["xla"]), ("tracking", result["tracking"]),
                     ("sft/fused", result["sft"]["fused"]),
                     (f"sft/{stochastic}", result["sft"][stochastic]),
                     ("pattern", result["pattern"])]
    assert result["device_kind"] and result["params"] == config.num_params()
    assert set(result["sft"]) == {*accelerator.ATTENTION_IMPLS, stochastic}
    tokens = 2 * 16
    for figures in result["sft"].values():
        assert "error" not in figures
        assert figures["warm_s"] > 0 and figures["compile_s"] > 0
        assert figures["tokens_per_s"] == pytest.approx(tokens / figures["warm_s"])
        assert figures["model_flops"] == config.flops_per_token(16) * tokens
        assert figures["mfu"] == pytest.approx(figures["model_flops"] / figures["warm_s"] / peak)
        assert 0 < figures["mfu"] <= 1 and 0 < figures["hfu"] <= 1
        # XLA's own count of the unrolled step agrees with the model count (6N + attention)
        # up to the elementwise work, the optimizer and the causal half of attention.
        assert 0.7 < figures["compiled_flops"] / figures["model_flops"] < 1.5
    pattern = result["pattern"]
    assert pattern["forward_s"] > 0 and pattern["pattern_s"] > 0
    assert pattern["x_forward"] == pytest.approx(pattern["pattern_s"] / pattern["forward_s"])
    tracking = result["tracking"]
    assert tracking["recordings"] == 2  # step 0 and the final step 4 (every = 50)
    assert tracking["wall_with_s"] > 0 and tracking["wall_without_s"] > 0
    assert tracking["record_s"] > 0 and 0 < tracking["steady_share"] < 1
    table = report.accelerator_table(result)
    assert result["device_kind"] in table and "MFU" in table


def test_benchmark_script_names_a_wrong_flag_and_exits_2():
    root = Path(__file__).resolve().parents[1]
    for args, flag in ((["--sections=cpu_ratio", "--pairs=3"], "--pairs"),
                       (["--sections=forward,bogus"], "--sections"),
                       (["--sections=accelerator", "--accel_num_kv_heads=5"], "--accel_"),
                       (["--sections=lora", "--lora_targets=q,x"], "--lora_targets"),
                       (["--sections=lora", "--lora_rank=0"], "--lora_rank"),
                       (["--sections=heads", "--head_model=no/such/model"], "--head_model")):
        done = subprocess.run([sys.executable, str(root / "scripts/benchmark.py"), *args],
                              capture_output=True, text=True, cwd=root, check=False,
                              env={**os.environ, "PYTHONPATH": str(root)})
        assert done.returncode == 2, done.stderr
        assert flag in done.stderr.strip().splitlines()[-1]


def test_heads_section_times_the_architecture_of_a_named_model(tiny, tiny_model_dir):
    """`--head_model`: the pattern and forward are timed on that model's shape (read from its
    metadata), not SmolLM2's."""
    from headjax.app.bench.report import heads_table
    from headjax.app.bench.sections import heads_section

    result = heads_section(4, 2, 16, 1, 2, model=str(tiny_model_dir))
    assert result["model"] == str(tiny_model_dir) and result["batches"] == 2
    assert result["layers_heads"] == [tiny[0].num_layers, tiny[0].num_heads]
    assert result["forward_total_s"] > 0 and result["pattern_total_s"] > 0
    assert result["naive_heads_timed"] == 2 and result["naive_per_forward_s"] > 0
    # the gate-only backward has one input-cotangent product per forward product (two per
    # attention product) and no weight gradients, which would make it about 3x
    assert 1.9 < result["pattern_flops_x_forward"] < 2.5, result["pattern_flops_x_forward"]
    assert "activation pattern / forward: " in heads_table(result)


def test_profile_section_traces_one_step_and_names_each_op_by_its_source(tmp_path):
    """The trace of a tiny model's SFT step is written; its ops are summed, ranked, and named by
    the HLO op_name metadata, with the backward pass told apart."""
    from headjax.app.bench.profile import profile_section
    from headjax.app.bench.sft import bench_config

    result = profile_section(bench_config(TINY), 2, 8, str(tmp_path / "trace"), top=10)
    assert list((tmp_path / "trace").rglob("*.trace.json.gz"))
    rows = result["rows"]
    assert 0 < len(rows) <= 10 and result["ops_ms"] > 0
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    assert sum(r["share"] for r in rows) <= 1 + 1e-9
    assert all(r["source"].startswith("jit(step)") for r in rows if r["source"])
    assert sum(bool(r["source"]) for r in rows) >= len(rows) // 2
    assert not any(r["op"].startswith(("while", "PjitFunction")) for r in rows)
    assert 0 < result["backward_share"] < 1
    assert result["untraced"]["wall_s"] > 0 and result["untraced"]["minor_page_faults"] >= 0
    assert "| op | ms |" in report.profile_table(result)
    assert "minor page faults" in report.profile_table(result)


def test_profile_section_tells_the_pattern_from_the_forward(tmp_path):
    """The forward loss has no backward pass; the activation pattern's gate-only backward is
    part of its trace."""
    from headjax.app.bench.profile import profile_section
    from headjax.app.bench.sft import bench_config

    shares = {program: profile_section(bench_config(TINY), 2, 8, str(tmp_path / program),
                                       top=5, program=program)["backward_share"]
              for program in ("forward", "pattern")}
    assert shares["forward"] == 0 and 0 < shares["pattern"] < 1, shares


def test_op_table_sums_ops_by_pass_place_and_kind():
    from headjax.app.bench.profile import op_table

    sources = {"a": "jit(f)/while/body/bsd,df->bsf/dot_general",
               "b": "jit(f)/transpose(jvp())/while/body/mul", "c": "jit(f)/reduce_max"}
    events = [{"name": "a", "dur": 3000}, {"name": "a", "dur": 1000}, {"name": "b", "dur": 500},
              {"name": "c", "dur": 250}, {"name": "while.1", "dur": 9000}]
    table = op_table(events, sources, top=2)
    assert table["groups_ms"] == {"backward layers other": 0.5, "forward layers products": 4.0,
                                  "forward outside other": 0.25}
    assert [r["op"] for r in table["rows"]] == ["a", "b"] and table["ops_ms"] == 4.75


def test_op_sources_reads_op_name_metadata():
    from headjax.app.bench.profile import op_sources

    hlo = ('  %dot.3 = f32[4,8]{1,0} dot(%a, %b), metadata={op_name="jit(f)/dot_general"}\n'
           '  ROOT %fusion.1 = f32[4]{0} fusion(%dot.3), kind=kLoop, '
           'metadata={op_name="jit(f)/transpose(jvp())/mul" stack_frame_id=2}\n'
           '  %p = f32[4]{0} parameter(0)\n')
    assert op_sources(hlo) == {"dot.3": "jit(f)/dot_general",
                               "fusion.1": "jit(f)/transpose(jvp())/mul", "p": ""}
    assert op_sources("  %while.2 = (s32[]) while(%t), body=%b\n") == {}
