"""The report's figures read right: `final_patterns.png` gives each task its own colour scale
(a task with small scores is not washed out by a task with large ones), and trajectory plots tick
the recorded steps only."""

from __future__ import annotations

import numpy as np

from headjax.heads import plots
from headjax.heads.report import analyze, figures


def test_final_patterns_one_scale_per_task_and_trajectory_ticks():
    rng = np.random.default_rng(0)
    steps = [0, 10, 40]
    patterns = {"large": np.stack([100 * rng.random((3, 4)) for _ in steps]),
                "small": np.stack([0.01 * rng.random((3, 4)) for _ in steps])}
    drawn = figures(analyze(steps, patterns, k=2), patterns)
    heatmaps = [ax for ax in drawn["final_patterns.png"].axes if ax.images]
    for ax, task in zip(heatmaps, ("large", "small"), strict=True):
        final = patterns[task][-1]
        assert ax.images[0].get_clim() == (final.min(), final.max())
    colour_bars = [ax for ax in drawn["final_patterns.png"].axes if not ax.images]
    assert len(colour_bars) == 2 and all(ax.get_ylabel() == "activation" for ax in colour_bars)
    for task in patterns:
        ax = drawn[f"trajectory_{task}.png"].axes[0]
        assert list(ax.get_xticks()) == steps


def test_long_trajectories_tick_a_subset_of_recorded_steps():
    steps = list(range(0, 1000, 7))
    fig = plots.trajectory_curves(steps, {"r": np.zeros(len(steps))})
    ticks = list(fig.axes[0].get_xticks())
    assert 2 <= len(ticks) <= plots.MAX_STEP_TICKS and set(ticks) <= set(steps)
