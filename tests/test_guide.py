"""The paper's SFT improvements as trainer options (`headjax.app.guide`), on a tiny model.

Each option changes training as documented: the pattern mixture's counts follow the NNLS weights
of the target's pattern on the basic tasks' patterns and the warm start trains on exactly that
preliminary set first; head-targeted SFT leaves every parameter outside the chosen heads'
slices bit-identical, and "pattern" chooses the top heads of the target's activation pattern.

Bad input tried: a patterns file without a basic task's pattern, a mixture without basic tasks,
a head selection with two target tasks, both `guide.heads` and `train.trainable_heads`, a head
fraction above 1, a basic task that is also the target, mixture weights beside a guided mixture.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers_tasks import concatenated, digit_task, tiny_run_config
from helpers_tokenizer import chatml_tokenizer

from headjax.app.experiment import run
from headjax.app.guide import (
    NoPatternFitError,
    basis_examples,
    mixture_weights,
    plan_phases,
    preliminary_counts,
    select_heads,
    target_examples,
)
from headjax.data import example_batches
from headjax.heads import activation_pattern, head_parameter_mask
from headjax.train import validate

TARGET, BASIS = "guide_target", ("guide_a", "guide_b")


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    for name, op in ((TARGET, concatenated), (BASIS[0], sum), (BASIS[1], max)):
        digit_task(name, op)
    return tiny_model_dir


def _config(model_dir, run_dir):
    c = tiny_run_config(model_dir, run_dir, (TARGET,))
    c.data.train_samples = 8
    c.train.update(steps=2, warmup_steps=0)
    c.checkpoint.update(every=0, export_final=False)
    c.guide.update(basis=BASIS, preliminary_samples=16, warm_steps=2)
    return c


def test_preliminary_counts_are_proportional_and_add_up():
    np.testing.assert_array_equal(preliminary_counts(np.array([0.5, 0.3, 0.2]), 10), [5, 3, 2])
    np.testing.assert_array_equal(preliminary_counts(np.ones(3), 10), [4, 3, 3])
    np.testing.assert_array_equal(preliminary_counts(np.array([3.0, 1.0, 0.0]), 8), [6, 2, 0])
    with pytest.raises(ValueError, match="non-negative weights"):
        preliminary_counts(np.array([1.0, -1.0]), 4)


def test_pattern_mixture_recovers_planted_nnls_weights():
    rng = np.random.default_rng(0)
    basis = rng.random((3, 4, 5))
    target = 0.6 * basis[0] + 0.4 * basis[2] + 0.1
    weights = mixture_weights("pattern", ("a", "b", "c"), jax.random.key(0), target=target,
                              basis=basis)
    np.testing.assert_allclose(weights, [0.6, 0.0, 0.4], atol=1e-9)
    with pytest.raises(NoPatternFitError, match="NNLS weights of the basis .* are all zero"):
        mixture_weights("pattern", ("a",), jax.random.key(0), target=-basis[0],
                        basis=basis[:1])
    draw = mixture_weights("random", ("a", "b", "c"), jax.random.key(1))
    assert draw.sum() == pytest.approx(1.0) and (draw > 0).all()
    np.testing.assert_array_equal(draw, mixture_weights("random", "abc", jax.random.key(1)))
    assert not np.allclose(draw, mixture_weights("random", "abc", jax.random.key(2)))
    np.testing.assert_allclose(mixture_weights("uniform", "ab", jax.random.key(0)), [0.5, 0.5])


def test_select_heads_takes_the_top_or_as_many_random_heads():
    scores = np.arange(12, dtype=np.float64).reshape(3, 4)
    top = select_heads("pattern", scores, 0.25, jax.random.key(0))
    assert top.sum() == 3 and top[2, 1:].all()
    random = select_heads("random", scores, 0.25, jax.random.key(0))
    assert random.sum() == 3
    np.testing.assert_array_equal(random, select_heads("random", scores, 0.25,
                                                       jax.random.key(0)))
    with pytest.raises(ValueError, match="head_fraction"):
        select_heads("pattern", scores, 1.5, jax.random.key(0))


def test_phases_put_the_preliminary_set_first_or_together(model_dir, tmp_path):
    config = _config(model_dir, tmp_path)
    config.guide.mixture = "uniform"
    preliminary = basis_examples(config, [3, 5])
    assert [e.task for e in preliminary] == [BASIS[0]] * 3 + [BASIS[1]] * 5
    warm, target = plan_phases(config, preliminary)
    assert warm.examples == preliminary and target.examples == target_examples(config)
    assert warm.config.train.steps == 2 and warm.config.run_dir == str(tmp_path / "warm_start")
    config.guide.schedule = "joint"
    (joint,) = plan_phases(config, preliminary)
    assert joint.examples == preliminary + target_examples(config)


def test_pattern_mixture_warm_start_trains_on_the_fitted_counts(model_dir, tmp_path):
    config = _config(model_dir, tmp_path / "run")
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 2, 4))
    np.savez(tmp_path / "dap.npz", **{TARGET: 3 * a + b + 0.5, BASIS[0]: a, BASIS[1]: b})
    config.guide.update(mixture="pattern", patterns=str(tmp_path / "dap.npz"))
    state = run(config)
    record = json.loads((tmp_path / "run" / "guide.json").read_text())
    assert record["counts"] == {BASIS[0]: 12, BASIS[1]: 4}
    assert record["weights"][BASIS[0]] == pytest.approx(0.75)
    warm_dir = tmp_path / "run" / "warm_start"
    assert [p.name for p in (warm_dir / "checkpoints").iterdir()] == ["2"]
    assert json.loads((warm_dir / "summary.json").read_text())["steps"] == 2
    assert int(state.step) == 2  # the target phase's own steps, after the warm start

    missing = tmp_path / "partial.npz"
    np.savez(missing, **{TARGET: a, BASIS[0]: a})
    config.guide.patterns = str(missing)
    config.run_dir = str(tmp_path / "other")
    with pytest.raises(ValueError, match=r"guide.patterns: .*partial.npz has no pattern for "
                                         r"\['guide_b'\]"):
        run(config)


def test_head_targeted_sft_changes_only_the_top_pattern_heads(tiny, model_dir, tmp_path):
    model_config, base = tiny
    config = _config(model_dir, tmp_path)
    config.guide.update(heads="pattern", head_fraction=0.25)
    config.train.trainable_kv = False
    state = run(config)
    tokenizer = chatml_tokenizer()
    batches = example_batches(target_examples(config), tokenizer, batch_size=4, max_len=32)
    scores = activation_pattern(base, model_config, batches, progress=False).mean
    expected = np.zeros(scores.size, bool)
    expected[np.argsort(-scores.ravel(), kind="stable")[:2]] = True
    record = json.loads((tmp_path / "guide.json").read_text())
    assert sorted(map(tuple, record["trained_heads"])) == sorted(
        map(tuple, np.argwhere(expected.reshape(scores.shape)).tolist()))
    mask = head_parameter_mask(model_config, expected.reshape(scores.shape), include_kv=False)
    assert record["trainable_parameters"] == sum(int(np.asarray(m).sum())
                                                 for m in jax.tree.leaves(mask))
    for m, old, new in zip(jax.tree.leaves(mask), jax.tree.leaves(base),
                           jax.tree.leaves(state.params), strict=True):
        frozen = np.asarray(m) == 0
        old, new = np.asarray(old), np.asarray(new)
        assert np.array_equal(old[frozen].view(np.uint32), new[frozen].view(np.uint32))
        if (~frozen).any():
            assert not np.array_equal(old[~frozen], new[~frozen])

    config.guide.heads = "random"
    config.run_dir = str(tmp_path / "random")
    run(config)
    assert len(json.loads((tmp_path / "random" / "guide.json").read_text())
               ["trained_heads"]) == 2


@pytest.mark.parametrize("change, message", [
    ({"guide.mixture": "pattern", "guide.basis": ()}, "guide.basis: guide.mixture='pattern' "
                                                      "needs basic tasks"),
    ({"guide.heads": "pattern", "data.tasks": (TARGET, "guide_a")}, "needs exactly one target"),
    ({"guide.heads": "random", "train.trainable_heads": "h.npy"}, "not both"),
    ({"guide.head_fraction": 1.5}, r"guide.head_fraction: 1.5 not in \(0, 1\]"),
    ({"guide.mixture": "uniform", "guide.basis": (TARGET,)}, "also target tasks"),
    ({"guide.mixture": "random", "data.weights": (1.0,)}, "leave data.weights empty"),
    ({"guide.heads": "random", "data.streaming": True},
     "data.streaming: guide.mixture and guide.heads need the target's training samples"),
])
def test_bad_guide_settings_are_named(change, message, tmp_path):
    config = _config("unused", tmp_path)
    for key, value in change.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises(ValueError, match=message):
        validate(config)
