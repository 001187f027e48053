"""Every file in configs/ loads and validates; bad configs fail naming the key.

The schema locks itself: an unknown top-level or nested key and a string where an int is expected
are refused by ml_collections when assigned (run and reproduction configs alike). `validate`
refuses a bool where an int is expected, a schedule outside the choices, a negative learning
rate, mixture weights not matching the tasks, warmup longer than the run, grad_accum not dividing
the batch, an empty task list.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from headjax.app.reproduce.config import (
    default_reproduce_config,
    load_config_file,
    validate_reproduce,
)
from headjax.train import default_config, validate

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.py"))


def test_config_dir_is_complete():
    names = {p.stem for p in CONFIG_FILES}
    assert {"default", "smollm2_quickstart", "smollm2_basic_tasks", "smollm2_complex_task",
            "llama3_8b_tpu_v5p", "reproduce_smollm2"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_file_validates(path):
    config = load_config_file(str(path))
    if "findings" in config:  # a reproduction config: a base run config plus its stages
        validate_reproduce(config)
    else:
        validate(config)


def _set(config, dotted, value):
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config[part]
    with config.ignore_type():
        config[leaf] = value


@pytest.mark.parametrize("make", [default_config, default_reproduce_config])
@pytest.mark.parametrize("key, value, error, message", [
    ("learning_rate", 1e-3, AttributeError, r'Key "learning_rate" does not exist'),
    ("train.stepz", 3, AttributeError, r'Key "stepz" does not exist.*Did you mean "steps"'),
    ("train.steps", "100", TypeError, r"field 'steps'.*original type <class 'str'>"),
    ("model.scan_layers", "yes", TypeError, r"cannot be casted to type <class 'bool'>"),
])
def test_schema_locks_itself(make, key, value, error, message):
    config = make()
    if "base" in config:  # a reproduction config: its run config is `base`
        config = config.base
    *parents, leaf = key.split(".")
    for part in parents:
        config = config[part]
    with pytest.raises(error, match=message):
        setattr(config, leaf, value)


@pytest.mark.parametrize("key, value, error, message", [
    ("train.batch_size", True, TypeError, r"config.train.batch_size: expected int, got bool"),
    ("train.schedule", "step", ValueError, r"config.train.schedule: 'step' not in"),
    ("train.lr", -1.0, ValueError, r"config.train.lr: must be > 0"),
    ("data.weights", (1.0, 2.0), ValueError, r"config.data.weights: 2 weights for 1 tasks"),
    ("train.warmup_steps", 1000, ValueError, r"config.train.warmup_steps: 1000 exceeds"),
    ("train.grad_accum", 3, ValueError, r"config.train.grad_accum: 3 does not divide"),
    ("data.tasks", (), ValueError, r"config.data.tasks: name at least one task"),
])
def test_bad_config_names_the_key(key, value, error, message):
    config = default_config()
    _set(config, key, value)
    with pytest.raises(error, match=message):
        validate(config)


def test_int_is_accepted_where_a_float_is_expected():
    config = default_config()
    config.train.lr = 1
    validate(config)
