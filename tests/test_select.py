"""Data selection by activation pattern (`headjax.heads.selection`, `headjax.app.select`).

The similarity is checked against hand computations and numpy's own correlation; the selection
is the top fraction by similarity, the random baseline as large and seeded. On the tiny model,
the pool's scores are recomputed independently (each example alone, batch of one) and the run
must choose the top fraction of them and hand exactly those examples to training. That pattern
selection prefers examples of the target's own kind is checked on SmolLM2-135M-Instruct
(tests/test_select_smollm2.py, which says why the tiny random model cannot show it).

Bad input tried: an unknown similarity or method, a fraction outside (0, 1], pattern scores of
the wrong length, a selection without a pool, beside a guided mixture, with data weights, or with
two targets.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_tasks import concatenated, digit_task, tiny_run_config
from helpers_tokenizer import chatml_tokenizer

from headjax.app import experiment
from headjax.app.guide import target_examples
from headjax.app.select import pool_examples, run_selected
from headjax.data import example_batches
from headjax.heads import fraction_count, pattern_similarity, per_sample_head_scores
from headjax.heads.selection import select_examples
from headjax.train import validate

TARGET, OTHER = "select_target", "select_other"


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    digit_task(TARGET, concatenated)
    digit_task(OTHER, lambda d: int(max(d)))
    return tiny_model_dir


def _config(model_dir, run_dir, method="pattern"):
    c = tiny_run_config(model_dir, run_dir, (TARGET,))
    c.data.train_samples = 4
    c.train.update(steps=2, warmup_steps=0)
    c.checkpoint.update(every=0, export_final=False)
    c.select.update(method=method, pool=(TARGET, OTHER), pool_samples=8, fraction=0.25)
    return c


def test_fraction_count_rounds_to_nearest_with_at_least_one():
    assert fraction_count(0.25, 16) == 4
    assert fraction_count(0.1, 25) == 2  # 2.5: Python's round goes to the even integer
    assert fraction_count(0.1, 35) == 4  # 3.5 -> 4
    assert fraction_count(0.3, 10) == 3
    assert fraction_count(0.01, 10) == 1  # never empty
    assert fraction_count(1.0, 7) == 7
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            fraction_count(bad, 10)


def test_similarity_matches_hand_computation():
    target = np.array([[1.0, 2.0, 3.0]])
    samples = np.array([[[2.0, 4.0, 6.0]],   # same direction
                        [[3.0, 2.0, 1.0]],   # reversed
                        [[1.0, 1.0, 1.0]],   # constant: no direction once centred
                        [[0.0, 0.0, 0.0]]])  # zero vector
    np.testing.assert_allclose(pattern_similarity(samples, target, "cosine"),
                               [1.0, 10 / 14, 6 / np.sqrt(3 * 14), 0.0], rtol=1e-12)
    np.testing.assert_allclose(pattern_similarity(samples, target, "pearson"),
                               [1.0, -1.0, 0.0, 0.0], atol=1e-12)
    rng = np.random.default_rng(0)
    per_sample, goal = rng.random((5, 3, 4)), rng.random((3, 4))
    expected = [np.corrcoef(s.ravel(), goal.ravel())[0, 1] for s in per_sample]
    np.testing.assert_allclose(pattern_similarity(per_sample, goal, "pearson"), expected,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="similarity: 'dot'"):
        pattern_similarity(per_sample, goal, "dot")
    with pytest.raises(ValueError, match="does not match"):
        pattern_similarity(per_sample, goal.T, "cosine")


def test_pattern_selection_is_the_top_fraction_ties_to_lower_index():
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.7])
    np.testing.assert_array_equal(
        select_examples("pattern", 5, 0.6, jax.random.key(0), scores=scores), [1, 2, 4])
    np.testing.assert_array_equal(select_examples("all", 5, 0.2, jax.random.key(0)), range(5))
    with pytest.raises(ValueError, match="one score per pool example"):
        select_examples("pattern", 6, 0.5, jax.random.key(0), scores=scores)
    with pytest.raises(ValueError, match="select.method: 'best'"):
        select_examples("best", 5, 0.5, jax.random.key(0))


def test_random_baseline_has_the_same_size_and_is_seeded():
    draws = [select_examples("random", 40, 0.25, jax.random.key(seed)) for seed in range(4)]
    for draw in draws:
        assert len(draw) == 10 and len(set(draw.tolist())) == 10
        assert draw.min() >= 0 and draw.max() < 40
    np.testing.assert_array_equal(draws[0], select_examples("random", 40, 0.25,
                                                            jax.random.key(0)))
    assert len({tuple(d.tolist()) for d in draws}) == 4


_scores = jax.jit(per_sample_head_scores, static_argnames="config")


def _alone(params, model_config, examples, tokenizer):
    """[examples, layers, heads] per-sample scores, each example in a batch of its own."""
    rows = []
    for batch in example_batches(examples, tokenizer, batch_size=1, max_len=32):
        arrays = {k: jnp.asarray(v) for k, v in batch.items() if k != "task_ids"}
        rows.append(np.asarray(_scores(params, arrays, model_config))[0])
    return np.stack(rows)


def test_run_trains_on_exactly_the_top_fraction(tiny, model_dir, tmp_path, monkeypatch):
    model_config, params = tiny
    tokenizer = chatml_tokenizer()
    config = _config(model_dir, tmp_path / "run")
    handed = []
    real = experiment.train_batches

    def spy(config, tokenizer, examples):
        handed.append(list(examples))
        return real(config, tokenizer, examples)

    monkeypatch.setattr(experiment, "train_batches", spy)
    state = experiment.run(config)
    record = json.loads((tmp_path / "run" / "selection.json").read_text())

    pool = pool_examples(config, tokenizer)
    assert [e.task for e in pool] == [TARGET] * 8 + [OTHER] * 8
    target = _alone(params, model_config, target_examples(config), tokenizer).mean(axis=0)
    per_sample = _alone(params, model_config, pool, tokenizer)
    expected = [np.corrcoef(s.ravel(), target.ravel())[0, 1] for s in per_sample]
    top = np.argsort(expected)[::-1][:4]
    assert record["pool_size"] == 16 and record["selected"] == 4 and record["fraction"] == 0.25
    assert [e["index"] for e in record["examples"]] == top.tolist()
    np.testing.assert_allclose([e["score"] for e in record["examples"]],
                               np.asarray(expected)[top], rtol=1e-4)
    assert handed == [[pool[i] for i in top]]  # only the selected examples reach training
    assert int(state.step) == 2
    assert record["trainable_parameters"] == record["total_parameters"]


def test_baselines_and_target_samples(model_dir, tmp_path):
    config = _config(model_dir, tmp_path, method="random")
    tokenizer = chatml_tokenizer()
    pool = pool_examples(config, tokenizer)

    seen: list = []

    class Done:  # a stand-in for training: only which examples it is handed matters here
        params = {"w": np.zeros(3)}

    def train_phase(c, p, examples, mask, heads):
        seen.append(examples)
        return Done()

    _, record = run_selected(config, Done.params, None, tokenizer, train_phase, write=False)
    assert record["selected"] == 4 and record["examples"][0]["score"] is None
    assert seen[-1] == [pool[e["index"]] for e in record["examples"]]
    _, again = run_selected(config, Done.params, None, tokenizer, train_phase, write=False)
    assert again["examples"] == record["examples"]  # seeded by select.seed
    config.select.seed = 1
    _, other = run_selected(config, Done.params, None, tokenizer, train_phase, write=False)
    assert other["examples"] != record["examples"]
    config.select.update(method="all", with_target=True)
    _, record = run_selected(config, Done.params, None, tokenizer, train_phase, write=False)
    assert record["selected"] == 16 and seen[-1] == pool + target_examples(config)


@pytest.mark.parametrize("change, message", [
    ({"select.pool": ()}, "select.pool: select.method='pattern' needs pool tasks"),
    ({"select.fraction": 1.5}, r"select.fraction: 1.5 not in \(0, 1\]"),
    ({"select.similarity": "dot"}, "select.similarity: 'dot' not in"),
    ({"select.method": "best"}, "select.method: 'best' not in"),
    ({"guide.mixture": "uniform", "guide.basis": (OTHER,)}, "without guide.mixture"),
    ({"data.weights": (1.0,)}, "leave data.weights empty"),
    ({"data.tasks": (TARGET, OTHER)}, "needs exactly one target"),
])
def test_bad_select_settings_are_named(change, message, tmp_path):
    config = _config("unused", tmp_path)
    for key, value in change.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises(ValueError, match=message):
        validate(config)
