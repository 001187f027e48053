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


def heads_table(results: dict) -> str:
    """Totals over all samples and each as a multiple of the forward passes."""
    fwd = results["forward_total_s"]
    rows = [("forward passes (loss)", fwd),
            ("activation pattern (head_scores)", results["pattern_total_s"]),
            (f"naive: one ablation forward per head (timed {results['naive_heads_timed']} heads, "
             "extrapolated)", results["naive_total_s"])]
    lines = ["| method | total | x forward |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:,.1f} s | {seconds / fwd:.2f}x |" for name, seconds in rows]
    return "\n".join(lines)
