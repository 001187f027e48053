"""The report: reading a run's pattern files, the measures on planted trajectories, figures and
the `scripts/analyze.py` entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

from headjax.data import pack_rows
from headjax.heads import plots
from headjax.heads.report import analyze
from headjax.train.patterns import (
    load_arrays,
    load_run_patterns,
    pattern_path,
    per_sample_key,
    read_step,
    record_patterns,
    save_npz_atomically,
)

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_script(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "analyze.py"), *flags],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def planted_run(run_dir: Path) -> dict[str, np.ndarray]:
    """Patterns over steps 0, 50, 100 for tasks a, b and c, where dAP_c = 0.5 dAP_a + dAP_b;
    a moves heads (0, 0..1), b moves heads (2, 2..3). Written in the trainer's file layout."""
    rng = np.random.default_rng(0)
    base = {t: rng.random((3, 4)) for t in "abc"}
    d_a, d_b = np.zeros((3, 4)), np.zeros((3, 4))
    d_a[0, :2] = 1.0
    d_b[2, 2:] = 2.0
    d_a += 0.05 * rng.random((3, 4))
    d_b += 0.05 * rng.random((3, 4))
    change = {"a": d_a, "b": d_b, "c": 0.5 * d_a + d_b}
    trajectories = {t: np.stack([base[t] + f * change[t] for f in (0.0, 0.8, 1.0)])
                    for t in "abc"}
    for i, step in enumerate((0, 50, 100)):
        path = pattern_path(run_dir, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {t: p[i].astype(np.float32) for t, p in trajectories.items()}
        arrays.update({per_sample_key(t): np.stack([p[i]] * 2) for t, p in trajectories.items()})
        np.savez(path, **arrays)
    return trajectories


def test_report_measures_planted_trajectories(tmp_path):
    truth = planted_run(tmp_path)
    steps, patterns = load_run_patterns(tmp_path)
    assert steps == [0, 50, 100]
    assert sorted(patterns) == ["a", "b", "c"]
    np.testing.assert_allclose(patterns["c"], truth["c"], rtol=1e-6)
    report = analyze(steps, patterns, k=2, target="c", basis=["a", "b"], num_null=50)
    assert sorted(map(tuple, report["tasks"]["a"]["top_k_heads"])) == [(0, 0), (0, 1)]
    assert sorted(map(tuple, report["tasks"]["b"]["top_k_heads"])) == [(2, 2), (2, 3)]
    assert report["tasks"]["a"]["trajectory"]["corr_to_base"][0] == pytest.approx(1.0)
    assert report["tasks"]["a"]["trajectory"]["mse_to_final"][-1] == pytest.approx(0.0)
    assert report["overlap"]["a vs b"]["jaccard_top_k"] == 0.0
    combination = report["combination"]
    assert combination["ols"]["r2"] == pytest.approx(1.0, abs=1e-6)
    assert combination["nnls"]["weights"] == pytest.approx({"a": 0.5, "b": 1.0}, abs=1e-5)
    assert combination["shuffled_r2_mean"] < 0.6
    with pytest.raises(ValueError, match="unknown tasks"):
        analyze(steps, patterns, target="c", basis=["z"])
    with pytest.raises(AssertionError, match="shapes"):  # one [steps, layers, heads] for all
        analyze(steps, {**patterns, "d": patterns["a"][:, :2]})
    with pytest.raises(AssertionError):  # as many patterns as steps
        analyze(steps[:2], patterns)


def test_write_report_and_script(tmp_path):
    planted_run(tmp_path / "run")
    out = tmp_path / "out"
    result = run_script(f"--run_dir={tmp_path / 'run'}", f"--out={out}", "--k=2", "--target=c",
                        "--basis=a,b")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["combination"]["ols"]["r2"] == pytest.approx(1.0, abs=1e-6)
    markdown = (out / "report.md").read_text()
    images = [line[line.index("(") + 1:-1] for line in markdown.splitlines()
              if line.startswith("![")]
    assert "combination_nnls.png" in images and "final_patterns.png" in images
    assert len(images) == 2 + 2 * 3
    for name in images:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    bad = run_script()
    assert bad.returncode != 0 and "exactly one of --run_dir or --checkpoints" in bad.stderr
    unknown = run_script(f"--run_dir={tmp_path / 'run'}", f"--out={out}", "--target=c",
                         "--basis=a,z")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("--target/--basis: unknown tasks ['z'] or empty basis "
                                      "(have ['a', 'b', 'c'])")


def test_script_names_a_missing_run_dir(tmp_path):
    missing = tmp_path / "no_run"
    result = run_script(f"--run_dir={missing}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"--run_dir: {missing}: no such folder"
    assert not (tmp_path / "out").exists()
    missing.mkdir()
    result = run_script(f"--run_dir={missing}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"--run_dir: {missing}: no patterns/step_XXXXXX.npz in "
                                     "this folder")


def test_reads_what_the_trainer_records(tiny, tmp_path):
    config, params = tiny
    examples = [{"tokens": np.array([5, 6, 7, 8, 9]), "loss_mask": np.array([0, 0, 0, 1, 1])},
                {"tokens": np.array([3, 4, 5]), "loss_mask": np.array([0, 1, 1])}]
    batch = pack_rows([[(e, 0)] for e in examples] + [[]], 5, pad_id=0)
    probes = {"t": [batch]}
    recorded = [record_patterns(params, probes, config, pattern_path(tmp_path, step))
                for step in (0, 10)]
    steps, patterns = load_run_patterns(tmp_path)
    assert steps == [0, 10] and list(patterns) == ["t"]
    np.testing.assert_allclose(patterns["t"], np.stack([r["t"] for r in recorded]))
    with np.load(pattern_path(tmp_path, 10)) as saved:  # the padding row is not a sample
        chex.assert_shape(saved[per_sample_key("t")], (2, config.num_layers, config.num_heads))
        np.testing.assert_allclose(saved[per_sample_key("t")].mean(0), saved["t"], rtol=1e-6)
    means, per_sample = read_step(pattern_path(tmp_path, 10))
    assert list(means) == ["t"] and list(per_sample) == ["t"]
    np.testing.assert_array_equal(means["t"], recorded[1]["t"])
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'}: no such folder"):
        load_run_patterns(tmp_path / "missing")


def test_store_reads_files_of_the_earlier_layout(tmp_path):
    """Per-sample scores once stored as `<task>.per_sample`: `[samples, ...]` in step files,
    `[2, samples, ...]` (step 0, final) in findings files; read under their own names now."""
    rng = np.random.default_rng(0)
    run, ends = rng.random((5, 3, 4)), rng.random((2, 5, 3, 4))
    save_npz_atomically(tmp_path / "step.npz", {"t": run.mean(0), "t.per_sample": run})
    save_npz_atomically(tmp_path / "findings.npz", {"t": rng.random((2, 3, 4)),
                                                    "t.per_sample": ends})
    means, per_sample = read_step(tmp_path / "step.npz")
    np.testing.assert_array_equal(per_sample["t"], run)
    np.testing.assert_array_equal(means["t"], run.mean(0))
    findings = load_arrays(tmp_path / "findings.npz")
    assert sorted(findings) == ["per_sample/t@base", "per_sample/t@final", "t"]
    np.testing.assert_array_equal(findings[per_sample_key("t", "base")], ends[0])
    np.testing.assert_array_equal(findings[per_sample_key("t", "final")], ends[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.npz", "step.npz"]


def test_plots_draw_every_figure(tmp_path):
    rng = np.random.default_rng(0)
    figures = {
        "heatmaps": plots.pattern_heatmaps({"a": rng.random((3, 4)), "b": rng.random((3, 4))}),
        "separate": plots.pattern_heatmaps({"a": rng.random((3, 4))}, shared_scale=False),
        "before_after": plots.before_after(rng.random((3, 4)), rng.random((3, 4)), title="a"),
        "curves": plots.trajectory_curves([0, 1, 2], {"mse": [0.0, 1.0, 0.5]}),
        "bars": plots.bars({"a": 0.5, "b": -0.2}, ylabel="weight"),
    }
    shared = figures["heatmaps"].axes[0].images[0].get_clim()
    assert shared == figures["heatmaps"].axes[1].images[0].get_clim()
    low, high = figures["before_after"].axes[2].images[0].get_clim()
    assert low == -high
    for name, fig in figures.items():
        assert plots.save(fig, tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC


def test_script_scores_checkpoints(tiny, tmp_path):
    from helpers_tokenizer import chatml_tokenizer

    from headjax.io.native import save_native

    config, params = tiny
    tokenizer = chatml_tokenizer()
    tuned = {**params, "layers": {**params["layers"],
                                  "o_proj": params["layers"]["o_proj"].at[1, 2].multiply(3.0)}}
    save_native(str(tmp_path / "base"), params, config, tokenizer)
    save_native(str(tmp_path / "tuned"), tuned, config, tokenizer)
    out = tmp_path / "out"
    result = run_script(f"--checkpoints={tmp_path / 'base'},{tmp_path / 'tuned'}",
                        "--tasks=leg_counting,basic_arithmetic", "--num_samples=4",
                        "--batch_size=4", "--max_len=128", "--k=2", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == [0, 1] and sorted(report["tasks"]) == ["basic_arithmetic",
                                                                      "leg_counting"]
    head_change = np.array(report["param_change"]["head_combined"])
    assert np.argwhere(head_change > 0).tolist() == [[1, 2]]
    # scaling head (1, 2)'s output projection changes the model, hence every pattern
    assert min(report["param_change"]["pattern_to_param_ratio"].values()) > 0
    assert (out / "report.md").exists()
