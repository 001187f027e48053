"""The findings stage over several SFT seeds on the tiny native model and synthetic digit tasks:
seeds change the training data and hence dAP while the probes stay the same, finished (task,
seed) runs are skipped, the headline measures per seed match a recomputation from each seed's
runs and their interval over seeds a hand computation, and the verdict rules give each outcome on
hand-made numbers.

Bad input tried: empty, repeated, negative and 0-less `findings.seeds`; a report asked for a
seed never run; an unknown side.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest
from helpers_tasks import digit_task
from test_reproduce import TASKS, _config

from headjax.app.reproduce import findings_stage
from headjax.app.reproduce.config import findings_tasks, validate_reproduce
from headjax.app.reproduce.findings import finding2, own_change
from headjax.app.reproduce.findings_stage import findings_path, load_findings
from headjax.app.reproduce.report import wall_by_machine
from headjax.app.reproduce.runner import reproduce
from headjax.app.reproduce.seeds import over_seeds
from headjax.app.reproduce.statistics import mean_ci, seeds_for_half_width
from headjax.app.reproduce.verdicts import FAILS, HOLDS, UNDECIDED, verdict
from headjax.train.patterns import per_sample_key

SEEDS = (0, 1, 2)
T_975_2 = 4.302652729911275  # the 97.5% point of Student's t with 2 degrees of freedom


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    for name, op in TASKS.items():
        digit_task(name, op)
    return tiny_model_dir


def _recording(calls: list):
    """`findings_stage.train`, recording each run's (run_dir, data seed, probe batches)."""
    real = findings_stage.train

    def train(run, **kwargs):
        calls.append((run.run_dir, run.data.seed, kwargs["hooks"].probes))
        return real(run, **kwargs)

    return train


@pytest.fixture(scope="module")
def seeded_study(model_dir, tmp_path_factory):
    """(config, calls, report text) of the findings, measures and report stages over `SEEDS`."""
    out = tmp_path_factory.mktemp("seeds")
    config = _config(model_dir, out)
    config.findings.seeds = SEEDS
    calls: list = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(findings_stage, "train", _recording(calls))
        doc = reproduce(config, ("findings", "measures", "report"))
    return config, calls, doc.read_text()


def _top(values, k):
    return set(np.argsort(-np.abs(values).ravel(), kind="stable")[:k].tolist())


def test_seeds_change_the_data_not_the_probes(seeded_study):
    config, calls, _ = seeded_study
    tasks = findings_tasks(config)
    assert len(calls) == len(tasks) * len(SEEDS)
    runs = {run_dir: (seed, probes) for run_dir, seed, probes in calls}
    for task in tasks:
        assert findings_path(config, task, 0).name == f"{task}.npz"  # seed 0: the paths of before
        assert findings_path(config, task, 0).parent.name == "findings"
        by_seed = {s: runs[str(findings_path(config, task, s).with_suffix(""))] for s in SEEDS}
        assert [by_seed[s][0] for s in SEEDS] == list(SEEDS)  # data seed = SFT seed
        for s in SEEDS[1:]:
            probes, first = by_seed[s][1], by_seed[0][1]
            assert list(probes) == list(first)
            for u in probes:  # the same probe samples, token for token
                for a, b in zip(probes[u], first[u], strict=True):
                    for key in a:
                        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    changes = {s: load_findings(config, s) for s in SEEDS}
    for task in tasks:
        for a, b in itertools.combinations(SEEDS, 2):
            assert not np.allclose(own_change(changes[a], task), own_change(changes[b], task))
    assert not list((findings_path(config, tasks[0], 1).parent).glob("*/checkpoints"))


def test_finished_task_seed_pairs_are_skipped(seeded_study, tmp_path):
    config, _, _ = seeded_study
    redo = findings_path(config, "r_max", 2)
    before = load_findings(config, 2)["r_max"]
    redo.unlink()
    calls: list = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(findings_stage, "train", _recording(calls))
        reproduce(config, ("findings",))
    assert [c[0] for c in calls] == [str(redo.with_suffix(""))]
    again = load_findings(config, 2)["r_max"]  # the seed fixes the run: the same arrays again
    np.testing.assert_allclose(again["r_max"], before["r_max"], rtol=1e-5, atol=1e-7)


def test_seed_measures_and_interval_match_a_hand_computation(seeded_study):
    config, _, text = seeded_study
    measures = json.loads((findings_path(config, "r_sum", 0).parent.parent / "measures.json")
                          .read_text())
    per_seed = measures["seeds"]
    assert sorted(per_seed) == ["0", "1", "2"]
    k = config.findings.k
    tasks = findings_tasks(config)
    for s in SEEDS:
        findings = load_findings(config, s)
        assert per_seed[str(s)]["r2"]["value"] == pytest.approx(
            finding2(config, findings)["basic"]["r2_ols"])
        jaccards = [len(_top(own_change(findings, a), k) & _top(own_change(findings, b), k))
                    / len(_top(own_change(findings, a), k) | _top(own_change(findings, b), k))
                    for a, b in itertools.combinations(tasks, 2)]
        assert per_seed[str(s)]["jaccard"]["value"] == pytest.approx(np.mean(jaccards))
    assert per_seed["0"]["r2"]["value"] == measures["finding2"]["basic"]["r2_ols"]
    summary = over_seeds(per_seed)
    for name in ("r2", "jaccard", "ratio", "r2_held_out"):
        values = [per_seed[str(s)][name]["value"] for s in SEEDS]
        mean = sum(values) / 3
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        assert summary[name]["values"] == values
        assert summary[name]["mean"] == pytest.approx(mean)
        assert summary[name]["half"] == pytest.approx(T_975_2 * sd / math.sqrt(3))
        point = np.mean([per_seed[str(s)][name]["null_point"] for s in SEEDS])
        assert summary[name]["null_point"] == pytest.approx(point)
    r2 = summary["r2"]
    assert (f"{r2['mean']:.3g} [{r2['mean'] - r2['half']:.3g}, {r2['mean'] + r2['half']:.3g}]"
            in text)
    assert text.count(f"**Verdict on `{config.base.model.pretrained}`: ") == 3
    assert "1 seed: no interval over seeds" not in text
    assert (f"{r2['half']:.3g}; {seeds_for_half_width(r2['std'], 0.05) or 'more than 1000'} "
            "seeds would bring it to 0.05" in text)


def test_other_seeds_get_their_headlines_and_a_missing_one_is_named(seeded_study):
    config, _, _ = seeded_study
    config = config.copy_and_resolve_references()
    config.findings.seeds = (0, 1)
    text = reproduce(config, ("report",)).read_text()
    measures = json.loads((findings_path(config, "r_sum", 0).parent.parent / "measures.json")
                          .read_text())
    assert sorted(measures["seeds"]) == ["0", "1"]
    assert "Over SFT seeds 0, 1 (" in text
    assert "Not run yet: the grid stage has no results" in text  # findings only: said so
    config.findings.seeds = (0, 7)  # never run: named, and measures.json is left as it was
    with pytest.raises(FileNotFoundError, match=r"s7/r_target.npz: no findings run of seed 7"):
        reproduce(config, ("report",))
    assert json.loads((findings_path(config, "r_sum", 0).parent.parent / "measures.json")
                      .read_text()) == measures


@pytest.mark.parametrize("mean, half, point, side, expected", [
    (0.5, 0.1, 0.3, "above", HOLDS),  # [0.4, 0.6] beyond 0.3
    (0.2, 0.05, 0.3, "above", FAILS),  # [0.15, 0.25] short of 0.3
    (0.3, 0.1, 0.35, "above", UNDECIDED),  # [0.2, 0.4] contains 0.35
    (0.1, 0.05, 0.3, "below", HOLDS),  # [0.05, 0.15] below 0.3
    (0.5, 0.1, 0.3, "below", FAILS),
    (0.32, 0.05, 0.3, "below", UNDECIDED),
    (0.9, float("nan"), 0.3, "above", UNDECIDED),  # one seed: no interval
    (0.75, 0.25, 0.5, "above", UNDECIDED),  # [0.5, 1.0] touches 0.5 (exact in binary)
])
def test_verdict_rules(mean, half, point, side, expected):
    assert verdict(mean, half, point, side) == expected


def test_verdicts_over_hand_made_seeds():
    def seed(r2, null_point, jaccard):
        fixed = {"value": 1.0, "null_mean": 0.0, "null_point": 0.0}
        return {"r2": {"value": r2, "null_mean": 0.01, "null_point": null_point},
                "jaccard": {"value": jaccard, "null_mean": 0.5, "null_point": 0.4},
                "top_k_share": fixed, "r2_held_out": fixed, "ratio": fixed}

    summary = over_seeds({"0": seed(0.30, 0.05, 0.6), "1": seed(0.32, 0.07, 0.1),
                          "2": seed(0.34, 0.06, 0.35)})
    # r2: 0.32 ± 4.303 * 0.02 / sqrt(3) = [0.270, 0.370], beyond the null's 0.06
    assert summary["r2"]["half"] == pytest.approx(T_975_2 * 0.02 / math.sqrt(3))
    assert summary["r2"]["null_point"] == pytest.approx(0.06)
    assert summary["r2"]["verdict"] == HOLDS
    assert summary["jaccard"]["verdict"] == UNDECIDED  # 0.35 ± 0.62 straddles 0.4
    low = over_seeds({"0": seed(0.01, 0.05, 0.6), "1": seed(0.02, 0.07, 0.7),
                      "2": seed(0.015, 0.06, 0.65)})
    assert low["r2"]["verdict"] == FAILS and low["jaccard"]["verdict"] == FAILS
    single = over_seeds({"0": seed(0.9, 0.05, 0.0)})
    assert math.isnan(single["r2"]["half"]) and single["r2"]["verdict"] == UNDECIDED
    # SD 0.02 is within R^2's goal (0.05) at 3 seeds already: 4.303 * 0.02 / sqrt(3) = 0.0497
    assert summary["r2"]["seeds_for_goal"] == 3 and summary["jaccard"]["seeds_for_goal"] is None
    assert single["r2"]["seeds_for_goal"] is None


@pytest.mark.parametrize(("std", "half", "expected"), [
    # t(0.975, n-1) / sqrt(n) from the t table: n=6 2.571/2.449 = 1.050, n=7 2.447/2.646 = 0.925
    (0.05, 0.05, 7),
    # n=2: 12.706 / 1.414 = 8.98
    (0.01, 0.0899, 2),
    # 2 * 1.96 * 0.1 / 0.01 ~ 15.4; the t quantile adds a little: n=17 2.120/4.123 = 0.514,
    # n=16 2.131/4 = 0.533
    (0.1, 0.0515, 17),
    (1.0, 1e-3, None),
])
def test_seeds_for_half_width_against_the_t_table(std, half, expected):
    assert seeds_for_half_width(std, half) == expected
    if expected is not None:  # the interval a sample with that SD gives (mean_ci) agrees
        values = np.linspace(-1.0, 1.0, expected)
        values = values / values.std(ddof=1) * std
        assert mean_ci(values)[2] <= half + 1e-12


@pytest.mark.parametrize("seeds", [(), (0, 0), (-1, 0), (1, 2)])
def test_bad_findings_seeds_are_named(model_dir, tmp_path, seeds):
    config = _config(model_dir, tmp_path)
    config.findings.seeds = seeds
    with pytest.raises(ValueError, match=r"config\.findings\.seeds"):
        validate_reproduce(config)
    with pytest.raises(ValueError, match="side"):
        verdict(0.5, 0.1, 0.3, "sideways")


def test_wall_time_is_reported_per_machine_in_order_of_first_run():
    runs = [(600.0, "2 CPU cores"), (120.0, "1 x NVIDIA H100 80GB HBM3"), (1800.0, "2 CPU cores")]
    assert wall_by_machine(runs) == "40 min on 2 CPU cores + 2 min on 1 x NVIDIA H100 80GB HBM3"
    assert wall_by_machine([]) == "0 min"


def test_sum_to_one_findings_keep_per_sample_means_equal_to_the_pattern(seeded_study, tmp_path):
    config, _, _ = seeded_study
    raw = load_findings(config, 1)
    config = config.copy_and_resolve_references()
    config.findings.normalization = "sum_to_one"
    scaled = load_findings(config, 1)
    for task, arrays in scaled.items():
        for u in (task, config.findings.target):
            np.testing.assert_allclose(arrays[u].sum(axis=(1, 2)), 1.0, rtol=1e-5)
            for moment, step in (("base", 0), ("final", -1)):
                per_sample = arrays[per_sample_key(u, moment)]
                np.testing.assert_allclose(per_sample.mean(axis=0), arrays[u][step], rtol=1e-5)
                total = raw[task][u][step].sum()
                np.testing.assert_allclose(per_sample * total,
                                           raw[task][per_sample_key(u, moment)], rtol=1e-5)
        np.testing.assert_array_equal(arrays["head_change"], raw[task]["head_change"])
    # the measures and report on them, beside the raw study (a copy of its runs)
    shutil.copytree(config.out_dir, tmp_path / "runs")
    config.out_dir, config.doc = str(tmp_path / "runs"), str(tmp_path / "normalized.md")
    text = reproduce(config, ("measures", "report")).read_text()
    assert "`findings.normalization = sum_to_one`" in text
    assert text.count("**Verdict on") == 3


def test_verdicts_per_model_set_other_studies_beside_this_one(seeded_study, tmp_path):
    """`compare_configs`: a measured study's verdicts (here a copy of this one's runs) in a row
    of their own, an unmeasured one named with its command; a missing file is refused."""
    config, _, _ = seeded_study
    config = config.copy_and_resolve_references()
    shutil.copytree(config.out_dir, tmp_path / "runs")
    config.out_dir, config.doc = str(tmp_path / "runs"), str(tmp_path / "docs" / "this.md")
    other = config.copy_and_resolve_references()
    other.doc = str(tmp_path / "docs" / "other.md")
    unmeasured = other.copy_and_resolve_references()
    unmeasured.out_dir = str(tmp_path / "never")
    files = []
    for name, c in (("other", other), ("unmeasured", unmeasured)):
        path = tmp_path / f"{name}.py"
        path.write_text("import json\nimport ml_collections\n\n\ndef get_config():\n"
                        f"    return ml_collections.ConfigDict(json.loads({c.to_json()!r}))\n")
        files.append(str(path))
    config.compare_configs = tuple(files)
    text = reproduce(config, ("measures", "report")).read_text()
    table = text[text.index("## Verdicts per model"):].split("\n\n")[2].splitlines()[2:]
    assert len(table) == 3
    measures = json.loads((tmp_path / "runs" / "measures.json").read_text())
    summary = over_seeds(measures["seeds"])
    r2 = summary["r2"]
    expected = (f"r2 {r2['mean']:.3g} [{r2['mean'] - r2['half']:.3g}, "
                f"{r2['mean'] + r2['half']:.3g}]: {r2['verdict']}")
    assert expected in table[0] and expected in table[1]
    assert table[0].replace("this.md", "other.md") == table[1]
    assert f"--config {files[1]} --stages findings,measures,report" in table[2]
    config.compare_configs = (str(tmp_path / "nowhere.py"),)
    with pytest.raises(ValueError, match=r"config.compare_configs: no file .*nowhere.py"):
        validate_reproduce(config)
