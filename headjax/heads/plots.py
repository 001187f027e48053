"""Figures for the analyses. Each function returns a matplotlib `Figure` built with the object API
(no pyplot state, no backend switch: it renders through the Agg canvas, and a notebook displays
it inline); save it with `save(fig, path)`. Patterns are `[layers, heads]`, layers on the y axis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MAX_STEP_TICKS = 10


def _heatmap(ax, pattern, title, **imshow):
    image = ax.imshow(np.asarray(pattern), aspect="auto", origin="lower", **imshow)
    ax.set_title(title)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return image


def pattern_heatmaps(patterns: Mapping[str, np.ndarray], *, shared_scale: bool = True,
                     cmap: str = "viridis", label: str = "activation",
                     symmetric: bool = False) -> Figure:
    """One layer x head heatmap per task; one colour scale across tasks when `shared_scale`,
    else one per task (each with its own labelled colour bar, so a task with small scores is not
    washed out); centred on 0 (-max|x| .. max|x|) when `symmetric` (for changes, with a
    diverging `cmap`)."""
    names = list(patterns)
    fig = Figure(figsize=(4 * len(names), 3.5), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)
    arrays = [np.asarray(patterns[n]) for n in names]
    scale = ({"vmin": min(a.min() for a in arrays), "vmax": max(a.max() for a in arrays)}
             if shared_scale else {})
    if shared_scale and symmetric:
        limit = max(float(np.abs(a).max()) for a in arrays) or 1.0
        scale = {"vmin": -limit, "vmax": limit}
    for ax, name, array in zip(axes[0], names, arrays, strict=True):
        image = _heatmap(ax, array, name, cmap=cmap, **scale)
        if not shared_scale:
            fig.colorbar(image, ax=ax, label=label)
    if shared_scale:
        fig.colorbar(image, ax=axes[0].tolist(), label=label)
    return fig


def before_after(before: np.ndarray, after: np.ndarray, *, title: str = "") -> Figure:
    """Three panels: before and after on one colour scale, and their difference on a symmetric
    diverging scale centred on 0."""
    before, after = np.asarray(before), np.asarray(after)
    diff = after - before
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    axes = fig.subplots(1, 3)
    scale = {"vmin": min(before.min(), after.min()), "vmax": max(before.max(), after.max())}
    _heatmap(axes[0], before, "before", **scale)
    image = _heatmap(axes[1], after, "after", **scale)
    fig.colorbar(image, ax=axes[:2].tolist())
    limit = float(np.abs(diff).max()) or 1.0
    image = _heatmap(axes[2], diff, "after - before", cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(image, ax=axes[2])
    if title:
        fig.suptitle(title)
    return fig


def trajectory_curves(steps: Sequence[int], curves: Mapping[str, np.ndarray], *,
                      ylabel: str = "", title: str = "") -> Figure:
    """One line per named curve over training steps (e.g. MSE / correlation to base and final);
    the step axis ticks recorded steps only (at most `MAX_STEP_TICKS` of them, evenly picked)."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    for name, values in curves.items():
        ax.plot(steps, np.asarray(values), marker="o", label=name)
    steps = list(steps)
    ax.set_xticks(steps[:: -(-len(steps) // MAX_STEP_TICKS)] if steps else [])
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig


def bars(values: Mapping[str, float], *, ylabel: str = "", title: str = "") -> Figure:
    """A bar per named value: combination weights (with R^2 in the title) or ablation effects."""
    fig = Figure(figsize=(1.2 * len(values) + 2, 3.5), layout="constrained")
    ax = fig.subplots()
    names = list(values)
    ax.bar(names, [float(values[n]) for n in names])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    return fig


def grouped_bars(values: Mapping[str, Mapping[str, float]], groups: Sequence[str], *,
                 ylabel: str = "") -> Figure:
    """Per name of `values`, one bar per group side by side (e.g. per task: the loss increase of
    ablating its own, other tasks' and random heads)."""
    fig = Figure(figsize=(1.6 * len(values) + 2, 3.5), layout="constrained")
    ax = fig.subplots()
    names = list(values)
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        ax.bar(np.arange(len(names)) + i * width, [values[n][group] for n in names], width,
               label=group)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20)
    ax.set_ylabel(ylabel)
    ax.legend()
    return fig


def errorbar_curves(series: Mapping[str, tuple[Sequence[float], Sequence[float],
                                               Sequence[float]]], *,
                    xlabel: str = "", ylabel: str = "") -> Figure:
    """One line per name with error bars: `series[name] = (x, y, half-widths)` (e.g. accuracy
    against training samples, mean and 95% interval over seeds)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for name, (x, y, yerr) in series.items():
        ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig


def scatter(x: np.ndarray, y: np.ndarray, *, xlabel: str = "", ylabel: str = "",
            title: str = "") -> Figure:
    """One point per entry of `x` and `y` (e.g. per head: parameter change vs pattern change)."""
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(np.ravel(x), np.ravel(y), s=12, alpha=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
