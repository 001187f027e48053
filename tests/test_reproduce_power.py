"""The reproduction's target choice, pilot and design search: the targets stage and the pilot on
the tiny native model and synthetic digit tasks (resume skips what is done, the design page is
written), `pick_target` on planted numbers, and the power functions against hand-computed cases.

Bad input tried: no candidates for the targets stage, an accuracy range out of order, a pilot
resumed with another probe count.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from helpers_tasks import digit_task
from test_reproduce import TASKS, _config

from headjax.app.reproduce.config import default_reproduce_config, validate_reproduce
from headjax.app.reproduce.grid import target_steps
from headjax.app.reproduce.power import (
    Costs,
    PatternNoise,
    Study,
    choose,
    cpu_hours,
    design_table,
    detectable,
    pattern_noise,
    r2_half_width,
    seeds_needed,
    seeds_to_detect,
    two_way_components,
)
from headjax.app.reproduce.power_doc import _grid_steps_md
from headjax.app.reproduce.runner import reproduce
from headjax.app.reproduce.targets import RULES, pick_target, run_targets


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    for name, op in TASKS.items():
        digit_task(name, op)
    return tiny_model_dir


def _small(config):
    config.targets.update(candidates=("r_sum", "r_max"), eval_samples=4, steps=2)
    config.power.update(pilot_seeds=(0, 1), probes=(4, 8), findings_seeds=(1, 2),
                        grid_seeds=(2, 4), eval_samples=(4, 8))
    return config


def test_targets_and_pilot_resume_and_write_the_design_page(model_dir, tmp_path):
    config = _small(_config(model_dir, tmp_path))
    assert reproduce(config, ("targets", "pilot", "power")) is None
    rows = [json.loads(line) for line in (tmp_path / "runs" / "targets.jsonl").read_text()
            .splitlines()]
    assert [r["task"] for r in rows] == ["r_sum", "r_max"]
    for r in rows:
        assert len(r["base_scores"]) == len(r["sft_scores"]) == 4
        assert r["base_accuracy"] == pytest.approx(np.mean(r["base_scores"]))
        assert r["gain"] == pytest.approx(r["sft_accuracy"] - r["base_accuracy"])
        assert r["steps"] == 2 and r["wall_s"] >= r["train_s"] > 0
    pilot = [json.loads(line) for line in (tmp_path / "runs" / "pilot.jsonl").read_text()
             .splitlines()]
    assert [r["seed"] for r in pilot] == [0, 1] and pilot[0]["mid_step"] == 1
    with np.load(tmp_path / "runs" / "pilot" / "s1.npz") as changes:
        assert changes["final"].shape == (4, 2, 4)  # probes, layers, heads of the tiny model
    page = (tmp_path / "docs" / "reproduction_power.md").read_text()
    for heading in ("## Target choice", "## Pilot", "## Power", "**Design**"):
        assert heading in page
    grid_steps = target_steps(config, 32)  # power.grid_budgets = (32,), the pilot's 2 steps
    assert grid_steps != 2 and (f"Target steps of the powered grid: {grid_steps} at budget 32. "
                                "**Caveat:** budget 32 trains other than the pilot's 2 steps"
                                ) in " ".join(page.split())

    def fail(*args):
        raise AssertionError("a finished task ran again")

    config.targets.candidates = ("r_sum", "r_max", "r_min")
    done = run_targets(config, None, None, None,
                       measure=lambda c, p, m, t, task: fail() if task != "r_min" else
                       {"key": task, "task": task})
    assert list(done) == ["r_sum", "r_max", "r_min"]
    config.findings.probe_samples = 8  # the pilot's seeds ran with 4 probes: not mixed in
    with pytest.raises(ValueError, match=r"pilot.jsonl: \['s0', 's1'\] ran with other"):
        reproduce(config, ("pilot",))


def test_bad_target_configs_are_named(model_dir, tmp_path):
    config = _config(model_dir, tmp_path)
    with pytest.raises(ValueError, match="config.targets.candidates"):
        reproduce(config, ("targets",))
    config.targets.accuracy_range = (0.6, 0.1)
    with pytest.raises(ValueError, match="config.targets.accuracy_range"):
        validate_reproduce(config)


def _row(task, base, sft):
    return {"task": task, "base_accuracy": base, "sft_accuracy": sft, "gain": sft - base}


def test_pick_target_keeps_both_accuracies_in_range_and_takes_the_largest_gain():
    rows = [_row("floor", 0.02, 0.40),   # largest gain but starts below the range
            _row("ceiling", 0.30, 0.75),  # ends above it
            _row("small", 0.20, 0.25),
            _row("best", 0.12, 0.45),
            _row("down", 0.50, 0.30)]
    assert pick_target(rows, (0.1, 0.6)) == ("best", RULES[0])
    assert pick_target(rows, (0.0, 1.0)) == ("ceiling", RULES[0])
    # none has both in range: the largest gain whose post-SFT accuracy is in range
    assert pick_target(rows[:2], (0.1, 0.6)) == ("floor", RULES[1])
    assert pick_target([_row("low", 0.01, 0.05)], (0.1, 0.6)) == (None, None)


def test_the_design_page_flags_grid_budgets_whose_steps_are_not_the_pilots():
    config = default_reproduce_config()
    config.grid.epochs = 2
    config.base.train.batch_size = 8
    config.power.grid_budgets = (128,)
    assert _grid_steps_md(config, 32) == "Target steps of the powered grid: 32 at budget 128."
    config.power.grid_budgets = (32, 128)
    assert _grid_steps_md(config, 32).startswith(
        "Target steps of the powered grid: 8 at budget 32, 32 at budget 128. **Caveat:** "
        "budget 32 trains other than the pilot's 32 steps")


def test_seeds_needed_is_the_normal_approximation():
    # pair variance 2 (0.002 + 0.2 / 200) = 0.006; (1.959964 + 0.841621)^2 = 7.848879;
    # 0.006 * 7.848879 / 0.03^2 = 52.33 -> 53 seeds
    assert seeds_needed(0.002, 0.2, 200, 0.03) == 53
    assert seeds_to_detect(0.006, 0.03) == 53  # the same, from the pair variance
    assert seeds_to_detect(1e-9, 0.03) == 2
    assert detectable(0.002, 0.2, 200, 53) == pytest.approx(
        2.801585 * math.sqrt(0.006 / 53), rel=1e-5)
    assert detectable(0.002, 0.2, 200, 53) <= 0.03 < detectable(0.002, 0.2, 200, 52)


def test_two_way_components_recover_planted_variances():
    rng = np.random.default_rng(0)
    rows, cols = 400, 300
    x = (rng.normal(0, 2.0, (rows, 1)) + rng.normal(0, 1.0, (1, cols))
         + rng.normal(0, 0.5, (rows, cols)))
    seed, probe, inter = two_way_components(x)
    assert seed == pytest.approx(4.0, rel=0.15)
    assert probe == pytest.approx(1.0, rel=0.2)
    assert inter == pytest.approx(0.25, rel=0.05)
    changes = np.broadcast_to(x[:, :, None, None], (rows, cols, 2, 3))
    pn = pattern_noise(changes[:3, :50], steps=8)
    assert pn.steps == 8 and pn.noise(3, 50) == pytest.approx(
        pn.seed / 3 + pn.probe / 50 + pn.interaction / 150)


def test_r2_half_width_grows_with_noise():
    assert r2_half_width(0.0, 0.5, 270, 4) == pytest.approx(0.0, abs=1e-9)
    widths = [r2_half_width(ratio, 0.5, 270, 4) for ratio in (0.01, 0.1, 0.5)]
    assert widths[0] < widths[1] < widths[2]
    # fewer heads, wider
    assert r2_half_width(0.1, 0.5, 72, 4) > widths[1]


def test_cpu_hours_and_choice_by_hand():
    costs = Costs(step_s=2.0, eval_example_s=0.5, probe_sample_s=0.1)
    study = Study(findings_tasks=6, probe_points=4, probe_tasks=2, grid_cells=10,
                  grid_steps=100, heads=270, basis=4, r2=0.17)
    # findings: 6 x (2 x (32 x 2 + 4 x 2 x 16 x 0.1) + 16 x 0.1) = 6 x (2 x 76.8 + 1.6) = 931.2 s
    # grid: 5 x (100 x 2 + 10 x (200 x 0.5 + 16 x 0.1)) = 5 x 1216 = 6080 s
    findings, grid = cpu_hours(costs, study, probes=16, steps=32, findings_seeds=2,
                               grid_seeds=5, n_eval=200)
    assert findings == pytest.approx(931.2 / 3600)
    assert grid == pytest.approx(6080 / 3600)
    # one second target: 2 x (32 x 2 + 4 x 1 x 16 x 0.1) + 16 x 0.1 = 2 x 70.4 + 1.6 = 142.4 s
    second = dataclasses.replace(study, second_targets=1)
    assert cpu_hours(costs, second, probes=16, steps=32, findings_seeds=2, grid_seeds=5,
                     n_eval=200) == pytest.approx(((931.2 + 142.4) / 3600, 6080 / 3600))
    noise = [PatternNoise(steps=32, seed=1e-4, probe=1e-3, interaction=1e-3, signal=1e-2)]
    rows = design_table(noise, {32: (1e-4, 0.2)}, costs, study, probes=(16, 64),
                        findings_seeds=(1, 3), grid_seeds=(5, 40), n_evals=(200, 1000))
    assert len(rows) == 16
    best, why = choose(rows, half_width=1.0, delta=1.0, budget_hours=100)
    assert best["hours"] == min(r["hours"] for r in rows) and "meets" in why
    best, why = choose(rows, half_width=1e-6, delta=1e-6, budget_hours=100)
    assert best is not None and "closest" in why
    assert choose(rows, 1.0, 1.0, budget_hours=1e-3) == (None, "no design considered fits the "
                                                              "budget")
