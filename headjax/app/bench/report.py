"""Markdown tables of benchmark results, with ratios to the PyTorch baselines."""

from __future__ import annotations


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms"


def forward_table(results: dict) -> str:
    """Warm medians and compile time per framework; ratio = headjax time / framework time."""
    ours = results["headjax"]
    lines = ["| framework | forward | fwd+bwd | compile fwd / fwd+bwd | headjax / this (fwd, "
             "fwd+bwd) |", "|---|---|---|---|---|"]
    for name, figures in results.items():
        fwd, both = figures["forward"], figures["forward_backward"]
        lines.append(f"| {name} | {_ms(fwd['warm_s'])} | {_ms(both['warm_s'])} | "
                     f"{fwd['compile_s']:.1f} s / {both['compile_s']:.1f} s | "
                     f"{ours['forward']['warm_s'] / fwd['warm_s']:.2f}x, "
                     f"{ours['forward_backward']['warm_s'] / both['warm_s']:.2f}x |")
    return "\n".join(lines)


def sft_table(results: dict) -> str:
    """Step time, tokens/s, peak RSS per framework; ratios relative to headjax's figures."""
    ours = results["headjax"]
    lines = ["| framework | step | tokens/s | peak RSS | compile | headjax step / this | "
             "headjax RSS / this |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {_ms(r['warm_s'])} | {r['tokens_per_s']:,.0f} | "
                     f"{r['peak_rss_mib']:,.0f} MiB | {r['compile_s']:.1f} s | "
                     f"{ours['warm_s'] / r['warm_s']:.2f}x | "
                     f"{ours['peak_rss_mib'] / r['peak_rss_mib']:.2f}x |")
    return "\n".join(lines)


def lora_table(results: dict) -> str:
    """LoRA step beside the full SFT step: time, tokens/s, peak memory, trained parameters, and
    each as a multiple of full SFT's."""
    full = results["steps"]["headjax"]
    device = lambda r: "n/a" if r["peak_device_mib"] is None else f"{r['peak_device_mib']:,.0f} MiB"
    lines = ["| step | time | tokens/s | peak RSS | peak device memory | compile | trained "
             "params | time / full | RSS / full |", "|---|---|---|---|---|---|---|---|---|"]
    for name, label in (("headjax", "full SFT"), ("headjax_lora", "LoRA")):
        r = results["steps"][name]
        lines.append(f"| {label} | {_ms(r['warm_s'])} | {r['tokens_per_s']:,.0f} | "
                     f"{r['peak_rss_mib']:,.0f} MiB | {device(r)} | {r['compile_s']:.1f} s | "
                     f"{results['trained_params'][name]:,} | "
                     f"{r['warm_s'] / full['warm_s']:.2f}x | "
                     f"{r['peak_rss_mib'] / full['peak_rss_mib']:.2f}x |")
    return "\n".join(lines)


def heads_table(results: dict) -> str:
    """Totals over all samples and each as a multiple of the forward passes."""
    fwd = results["forward_total_s"]
    rows = [("forward passes (loss)", fwd),
            ("activation pattern (head_scores)", results["pattern_total_s"]),
            (f"naive: one ablation forward per head (timed {results['naive_heads_timed']} heads, "
             "extrapolated)", results["naive_total_s"])]
    lines = ["| method | total | x forward |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:,.1f} s | {seconds / fwd:.2f}x |" for name, seconds in rows]
    if results.get("pattern_flops_x_forward"):
        lines += ["", "Compiled FLOPs (XLA's cost analysis), activation pattern / forward: "
                  f"{results['pattern_flops_x_forward']:.3f}x"]
    return "\n".join(lines)


def _cpu_line(cpu: dict) -> str:
    return (f"CPU: {cpu['model']}, {cpu['cores']} logical cores, vector extensions: "
            f"{' '.join(cpu['vector_extensions']) or 'none reported'}")


def cpu_ratio_table(results: dict) -> str:
    """The interleaved pairs: median step per framework and the ratio's median and spread."""
    ours, theirs = results["frameworks"]
    r = results["ratio"]
    lines = [_cpu_line(results["cpu"]), "",
             f"| pairs | {ours} step (median) | {theirs} step (median) | {ours} / {theirs} "
             "median | min - max | IQR |", "|---|---|---|---|---|---|",
             f"| {r['pairs']} | {_ms(results['median_s'][ours])} | "
             f"{_ms(results['median_s'][theirs])} | {r['median']:.2f}x | "
             f"{r['min']:.2f}x - {r['max']:.2f}x | {r['q1']:.2f}x - {r['q3']:.2f}x |", "",
             "Per-pair ratios in order: " + ", ".join(f"{x:.2f}" for x in r["ratios"])]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def accelerator_table(results: dict) -> str:
    """SFT step per attention implementation, pattern cost and tracking share."""
    peak = results["peak_flops"]
    lines = [f"Device: {results['device_kind']} (peak bf16 "
             f"{'unknown' if peak is None else f'{peak / 1e12:,.0f} TFLOP/s'}); "
             f"{results['params'] / 1e9:.2f} B parameters, {results['dtype']} compute, batch "
             f"{results['batch']} x {results['seq']}", "",
             "| attention | step | tokens/s | model TFLOP/step | MFU | compiled TFLOP/step | HFU "
             "| compile |", "|---|---|---|---|---|---|---|---|"]
    for impl, f in results["sft"].items():
        if "error" in f:
            lines.append(f"| {impl} | failed: {f['error'][:200]} |  |  |  |  |  |  |")
            continue
        compiled = "-" if f["compiled_flops"] is None else f"{f['compiled_flops'] / 1e12:.2f}"
        lines.append(f"| {impl} | {_ms(f['warm_s'])} | {f['tokens_per_s']:,.0f} | "
                     f"{f['model_flops'] / 1e12:.2f} | {_percent(f['mfu'])} | {compiled} | "
                     f"{_percent(f['hfu'])} | {f['compile_s']:.0f} s |")
    p, t = results["pattern"], results["tracking"]
    lines += ["", f"Activation pattern (`head_scores`, {results['attention_impl']} attention): "
              f"{_ms(p['pattern_s'])} vs loss forward {_ms(p['forward_s'])}: "
              f"{p['x_forward']:.2f}x a forward.", "",
              "Pattern tracking: not measured (the step failed)." if t is None
              else tracking_line(t, results["probe_seq"])]
    return "\n".join(lines)


def tracking_line(t: dict, probe_seq: int) -> str:
    """One sentence of `accelerator.tracking_figures`."""
    return (f"Pattern tracking, {t['steps']} steps, {t['probe_samples']} probe samples of "
            f"{probe_seq} tokens every {t['every']} steps ({t['recordings']} recordings): "
            f"{t['wall_with_s']:.1f} s with vs {t['wall_without_s']:.1f} s without, "
            f"{_percent(t['share'])} of the run; one recording {_ms(t['record_s'])}, "
            f"{_percent(t['steady_share'])} of the wall time at that cadence.")


def profile_table(results: dict) -> str:
    """One untraced run's wall and CPU seconds and page faults, then the traced run's top ops:
    summed ms, calls, share of all ops, pass, source."""
    u = results["untraced"]
    lines = [f"One untraced run: {u['wall_s']:.2f} s wall, {u['user_s']:.2f} s user and "
             f"{u['sys_s']:.2f} s system CPU, {u['minor_page_faults']:,} minor page faults.",
             f"All ops {results['ops_ms']:,.0f} ms, backward pass "
             f"{results['backward_share']:.0%} of it; trace in {results['trace_dir']}. By "
             "group: " + ", ".join(f"{g} {ms:,.0f} ms" for g, ms in results["groups_ms"].items())
             + ".", "",
             "| op | ms | calls | share | pass | source (HLO op_name) |",
             "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['op']} | {r['ms']:,.1f} | {r['calls']} | {r['share']:.1%} | "
                     f"{'backward' if r['backward'] else 'forward'} | `{r['source']}` |")
    return "\n".join(lines)
