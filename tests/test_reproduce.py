"""`headjax.app.reproduce` end to end on a tiny native model and synthetic digit tasks: the findings
stage, the grid and the report; a second call resumes without re-running anything.

Bad input tried: an unknown grid method, a findings task listed twice, an unknown stage, a
report asked of measures taken on other settings.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers_tasks import digit_task

from headjax.app.reproduce import record
from headjax.app.reproduce.config import default_reproduce_config, validate_reproduce
from headjax.app.reproduce.grid import BASE_KEY, method_config, target_steps
from headjax.app.reproduce.markdown import fewest_samples_md, improvement_md
from headjax.app.reproduce.runner import check_inputs, reproduce
from headjax.app.reproduce.statistics import cells
from headjax.train.patterns import per_sample_key

TASKS = {"r_target": sum, "r_sum": sum, "r_max": max, "r_min": lambda d: d[0]}
SECOND_TARGET = "r_spread"  # max - min


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    for name, op in TASKS.items():
        digit_task(name, op)
    digit_task(SECOND_TARGET, lambda d: max(d) - min(d))
    return tiny_model_dir


def _ols_r2(target: np.ndarray, basis: list[np.ndarray]) -> float:
    """R^2 of the least-squares fit of `target` on `basis` and a constant, over all heads."""
    x = np.stack([b.ravel() for b in basis] + [np.ones(target.size)], axis=1)
    y = target.ravel()
    residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    return float(1 - residual @ residual / ((y - y.mean()) @ (y - y.mean())))


def _config(model_dir, out):
    c = default_reproduce_config()
    c.out_dir = str(out / "runs")
    c.doc = str(out / "docs" / "reproduction.md")
    b = c.base
    b.model.pretrained = str(model_dir)
    b.data.max_len = 32
    b.train.update(batch_size=4, lr=1e-2, warmup_steps=0)
    b.eval.update(max_new_tokens=2, batch_size=4)
    b.heads.batch_size = 4
    c.findings.update(target="r_target", basic=("r_sum", "r_max"), unrelated=("r_min",),
                      train_samples=8, steps=2, probe_samples=4, probe_every=1, k=2,
                      null_draws=20, ablation_samples=2)
    c.grid.update(budgets=(4,), epochs=2, seeds=(0, 1), preliminary_samples=8, warm_steps=1,
                  head_fraction=0.25, eval_samples=4,
                  methods=("plain", "heads_pattern", "heads_random", "warm_pattern",
                           "select_pattern", "lora_pattern"), select_pool_samples=4,
                  select_fraction=0.25)
    return c


def test_grid_cells_configure_the_guide_options(model_dir, tmp_path):
    config = _config(model_dir, tmp_path)
    dap = tmp_path / "dap.npz"
    assert target_steps(config, 4) == 2
    plain = method_config(config, 4, "plain", 1, dap)
    assert plain.guide.mixture == "none" and plain.guide.heads == "all"
    assert (plain.data.tasks, plain.data.train_samples, plain.data.seed) == (("r_target",), 4, 1)
    warm = method_config(config, 4, "warm_pattern", 1, dap)
    assert (warm.guide.mixture, warm.guide.schedule, warm.guide.patterns) == (
        "pattern", "warm_start", str(dap))
    assert warm.guide.warm_dir.endswith("warm/pattern_s1")
    joint = method_config(config, 4, "joint_random", 0, dap)
    assert joint.guide.schedule == "joint" and joint.train.steps == 2 + 1
    assert method_config(config, 4, "heads_random", 0, dap).guide.heads == "random"
    select = method_config(config, 4, "select_random", 1, dap)
    assert (select.select.method, select.select.pool, select.select.seed) == (
        "random", ("r_sum", "r_max", "r_min"), 1)
    assert select.select.with_target and select.train.steps == 2 + 1
    assert select.guide.mixture == "none" and select.guide.heads == "all"
    config.grid.select_pool = ("r_max",)
    assert method_config(config, 4, "select_all", 0, dap).select.pool == ("r_max",)
    lora_all = method_config(config, 4, "lora_all", 0, dap)
    assert lora_all.lora.enabled and lora_all.lora.rank == config.grid.lora_rank
    assert lora_all.guide.heads == "all" and lora_all.guide.lora_budget_rank == 0
    head_lora = method_config(config, 4, "lora_pattern", 0, dap)
    assert head_lora.lora.enabled and head_lora.guide.heads == "pattern"
    assert head_lora.guide.lora_budget_rank == config.grid.lora_rank
    for run in (lora_all, head_lora):  # LoRA at its own rate, the rest at the base one
        assert run.train.lr == pytest.approx(config.base.train.lr * config.grid.lora_lr_scale)
    assert plain.train.lr == select.train.lr == config.base.train.lr


def test_reproduce_writes_the_report_and_resumes(model_dir, tmp_path, monkeypatch):
    config = _config(model_dir, tmp_path)
    config.record_dir = str(tmp_path / "record")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "reproduction_power.md").write_text("# design\n")  # the report links it
    saves, save = [], record.save

    def counted_save(c):
        written = save(c)
        saves.append(len(written))
        return written

    monkeypatch.setattr("headjax.app.reproduce.record.save", counted_save)
    doc = reproduce(config)
    # the record is saved after the base patterns, each findings run, each grid row and at the
    # end: 1 + 4 tasks + (the base model + 2 seeds x 6 methods) + 1
    assert len(saves) == 1 + 4 + 13 + 1 and all(saves[:-1])  # each wrote its new files
    text = doc.read_text()
    assert "[reproduction_power.md](reproduction_power.md)" in text
    assert text.count("1 seed: no interval over seeds") == 5  # one per headline measure
    assert "mean loss increase in nats on 2 probe samples of the task" in text  # of 4 probes
    assert text.count(f"**Verdict on `{config.base.model.pretrained}`: undecided at this "
                      "power**") == 3
    for heading in ("## Finding 1", "## Finding 2", "## Finding 3",
                    "## Improvements against their baselines", "## Figures"):
        assert heading in text
    # the anchors beside the rows they speak to
    assert "| P2D (arXiv 2605.21558) | " in text and "| select_pattern, heads_pattern |" in text
    assert "| LoFiT (arXiv 2406.01563) | " in text and "| heads_pattern, lora_pattern |" in text
    assert "LoRA rank 8 on q, k, v, o at lr 0.1 (10 x the base)" in text
    assert "| LESS (arXiv 2402.04333) | " in text
    for figure in ("dap_heatmaps.png", "nnls_weights.png", "trajectory.png", "ablation.png",
                   "improvement_accuracy.png", "improvement_loss.png", "param_vs_pattern.png"):
        assert (doc.parent / "reproduction" / figure).read_bytes()[:4] == b"\x89PNG"
    results = tmp_path / "runs" / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 1 + 2 * 6  # the base model, then 2 seeds x 6 methods
    by_key = {r["key"]: r for r in rows}
    heads = by_key["n4_heads_pattern_s0"]
    assert heads["trainable_parameters"] < heads["total_parameters"]
    assert heads["trainable_parameters"] == by_key["n4_heads_random_s0"]["trainable_parameters"]
    measures = json.loads((tmp_path / "runs" / "measures.json").read_text())
    weights = measures["finding2"]["basic"]["weights_nnls"]
    total = sum(weights.values())
    mixture = by_key["n4_warm_pattern_s0"]["mixture"]
    for task, weight in weights.items():  # the warm start follows the NNLS fit of the dAPs
        assert mixture[task] == pytest.approx(weight / total)
    assert sum(by_key["n4_warm_pattern_s0"]["counts"].values()) == 8
    assert sum(by_key["n4_select_pattern_s0"]["selected"].values()) == 3  # 0.25 of 3 x 4
    assert (tmp_path / "runs" / "grid" / "n4_select_pattern_s0" / "selection.json").exists()
    assert not list((tmp_path / "runs" / "grid").glob("*/checkpoints"))
    with np.load(tmp_path / "runs" / "findings" / "dap.npz") as dap:
        assert sorted(dap.files) == sorted(TASKS)

    reproduce(config, ("grid",))  # everything is done: nothing runs again
    assert results.read_text().count("\n") == len(rows)
    assert {r["lr"] for r in rows if r["key"] != BASE_KEY} == {1e-2, 1e-1}  # base; LoRA
    config.base.train.lr = 3e-2  # rows of another rate are not mixed in
    with pytest.raises(ValueError, match=r"results.jsonl: \['n4_heads_pattern_s0', .*"
                                         r"another learning rate"):
        reproduce(config, ("grid",))
    config.base.train.lr = 1e-2

    # Finding 3's null: 2 random changes per task as large as its SFT's, on its 4 probes
    null = measures["finding3_null"]
    assert (null["draws"], null["samples"]) == (2, 4) and sorted(null["tasks"]) == sorted(TASKS)
    assert all(len(v) == 2 and min(v) > 0 for v in null["tasks"].values())
    assert measures["seeds"]["0"]["ratio"]["null_point"] == max(null["mean_per_draw"])
    assert "| random change's ratio |" in text and "Null: the base model moved" in text
    # measures of before the null get it at the next report, the rest kept (nothing re-measured)
    path = tmp_path / "runs" / "measures.json"
    path.write_text(json.dumps({k: v for k, v in measures.items() if k != "finding3_null"}))
    monkeypatch.setattr("headjax.app.reproduce.runner.finding1", None)  # would fail if called
    reproduce(config, ("report",))
    assert json.loads(path.read_text()) == measures
    # a seed and a second target added later: their runs (the second target's base pattern
    # scored and merged into the file), the new seed's headlines beside seed 0's and the second
    # target's fits; nothing else measured
    monkeypatch.setattr("headjax.app.reproduce.runner.perturbation_null", None)
    assert measures["second_targets"] == {}
    base_file = tmp_path / "runs" / "findings" / "base_patterns.npz"
    with np.load(base_file) as base:
        base_before = {k: base[k] for k in base.files}
    config.findings.seeds = (0, 1)
    config.findings.second_targets = (SECOND_TARGET,)
    text = reproduce(config, ("findings", "report")).read_text()
    added = json.loads(path.read_text())
    assert sorted(added["seeds"]) == ["0", "1"] and added["seeds"]["0"] == measures["seeds"]["0"]
    per_seed = ("seeds", "second_targets")
    assert {k: v for k, v in added.items() if k not in per_seed} == {
        k: v for k, v in measures.items() if k not in per_seed}
    with np.load(base_file) as base:
        assert SECOND_TARGET in base.files and per_sample_key(SECOND_TARGET) in base.files
        assert all(np.array_equal(base[k], v) for k, v in base_before.items())
    assert "Over SFT seeds 0, 1 " in text
    # the second target: trained alone per seed, probed on itself, fitted on the basic tasks
    runs = tmp_path / "runs" / "findings"
    for seed, folder in (("0", runs), ("1", runs / "s1")):
        with np.load(folder / f"{SECOND_TARGET}.npz") as second:
            assert SECOND_TARGET in second.files and "r_target" not in second.files
            change = {SECOND_TARGET: second[SECOND_TARGET][-1] - second[SECOND_TARGET][0]}
        for task in config.findings.basic:
            with np.load(folder / f"{task}.npz") as run:
                change[task] = run[task][-1] - run[task][0]
        fit = added["second_targets"][SECOND_TARGET][seed]
        assert fit["r2"]["value"] == pytest.approx(_ols_r2(
            change[SECOND_TARGET], [change[t] for t in config.findings.basic]), abs=1e-6)
        assert 0 <= fit["r2"]["null_mean"] <= 1 and "value" in fit["r2_held_out"]
    assert f"| {SECOND_TARGET} | R^2 (OLS) of the target's dAP" in text
    assert "Second target: each trained alone on the same seeds" in text
    # a fresh machine: the record alone gives the study back, runs and measures as they were
    # (nothing is measured again: finding1 and the null would fail if called)
    assert (tmp_path / "record" / "findings" / "s1" / f"{SECOND_TARGET}.npz").exists()
    shutil.move(tmp_path / "runs", tmp_path / "old_runs")
    assert reproduce(config, ("report",)).read_text() == text
    assert json.loads(path.read_text()) == added
    # the measures stage keeps measures of the same inputs (finding1 would fail if called) ...
    reproduce(config, ("measures",))
    assert json.loads(path.read_text()) == added
    assert len(added["inputs"]["findings_digest"]) == 64
    config.findings.k = 3  # ... and the report refuses measures of other inputs
    with pytest.raises(ValueError, match=r"measures.json: measured on other findings runs or "
                                         r"settings than now; add the measures stage"):
        check_inputs(config, ("report",))


@pytest.mark.parametrize("change, message", [
    ({"grid.methods": ("plain", "magic")}, r"grid.methods: unknown \['magic'\]"),
    ({"findings.unrelated": ("r_sum",)}, "must be distinct"),
    ({"findings.second_targets": ("r_max",)}, "basic, unrelated and second_targets tasks must"),
    ({"findings.ablation_samples": -1}, "findings.ablation_samples"),
    ({"findings.normalization": "layer_l2"}, "findings.normalization"),
])
def test_bad_reproduce_configs_are_named(model_dir, tmp_path, change, message):
    config = _config(model_dir, tmp_path)
    for key, value in change.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises(ValueError, match=message):
        validate_reproduce(config)
    with pytest.raises(ValueError, match="--stages: unknown"):
        reproduce(_config(model_dir, tmp_path), ("grid", "publish"))


def test_a_partial_grid_says_how_much_of_the_design_ran():
    config = default_reproduce_config()
    config.grid.update(budgets=(32,), methods=("plain", "warm_pattern"), seeds=(0, 1, 2))

    def row(method, seed, accuracy):
        return {"key": f"n32_{method}_s{seed}", "method": method, "budget": 32, "seed": seed,
                "accuracy": accuracy, "heldout_loss": 1.0 - accuracy, "steps": 8,
                "trainable_parameters": 10}

    results = {BASE_KEY: {"key": BASE_KEY, "method": "base", "budget": 0, "seed": -1,
                          "accuracy": 0.1, "heldout_loss": 1.0, "n_eval": 4},
               **{r["key"]: r for r in (row("plain", 0, 0.2), row("plain", 1, 0.3),
                                        row("warm_pattern", 0, 0.25), row("warm_pattern", 1, 0.4),
                                        row("heads_random", 0, 0.5))}}  # not in the design
    text = "\n".join(improvement_md(config, results, cells(results)))
    assert "4 of the design's 6 runs (methods x budgets x seeds = 2 x 1 x 3)" in text
    # a run outside the design is shown and named as such, and does not count toward it
    assert "`--config.grid.methods`: heads_random (seed 0 at 32 samples)." in text
    assert "| heads_random | 32 | 1 | 8 | 10 | 50.0 |" in text
    # paired over seeds 0 and 1: differences 0.05 and 0.10, SD 0.0354, t(1) half-width 31.8 pp;
    # 0.0354^2 (1.959964 + 0.841621)^2 / 0.03^2 = 10.9 -> 11 seeds to detect 3 pp
    assert ("| warm_pattern | plain | 32 | 2 | 7.5 ± 31.8 | no clear difference | -0.075 ± "
            "0.318 | no clear difference | 11 |") in text
    results.update({r["key"]: r for r in (row("plain", 2, 0.2), row("warm_pattern", 2, 0.3))})
    assert "partial grid" not in "\n".join(improvement_md(config, results, cells(results)))


def test_fewest_samples_weighs_the_interval_beside_the_mean():
    def rows(method, budget, accuracies):
        return [{"method": method, "budget": budget, "seed": s, "accuracy": a,
                 "heldout_loss": 1.0 - a} for s, a in enumerate(accuracies)]

    cells = {("plain", 32): rows("plain", 32, [0.05, 0.06, 0.07]),
             ("plain", 128): rows("plain", 128, [0.10, 0.11, 0.12]),
             ("warm", 32): rows("warm", 32, [0.02, 0.03, 0.04]),
             ("warm", 128): rows("warm", 128, [0.095, 0.105, 0.115])}
    text = "\n".join(fewest_samples_md(cells, ["plain", "warm"], [32, 128], "accuracy",
                                       "accuracy %", True, 100.0, 2))
    # SD 1 pp over 3 seeds: 95% half-width t(2) x 1 / sqrt(3) = 2.48 pp
    assert "plain SFT's mean accuracy % at 128 samples (11.00)" in text
    assert "- plain: mean 128, interval 128 (32: 6.00 ± 2.48; 128: 11.00 ± 2.48)" in text
    # warm's mean 10.5 falls short of 11 and its interval's top (12.98) reaches it; at 32
    # samples neither does (3 + 2.48)
    assert "- warm: mean none, interval 128 (32: 3.00 ± 2.48; 128: 10.50 ± 2.48)" in text
    loss = "\n".join(fewest_samples_md(cells, ["warm"], [32, 128], "heldout_loss",
                                       "held-out loss", False, 1.0, 3))
    assert "- warm: mean none, interval 128 (32: 0.970 ± 0.025; 128: 0.895 ± 0.025)" in loss
    assert fewest_samples_md({}, ["warm"], [32], "accuracy", "accuracy", True, 100.0, 1) == []
