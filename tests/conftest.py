"""Shared fixtures: a tiny random model, compiled once per shape and reused across tests."""

from __future__ import annotations

import jax
import pytest

from headjax.model import init, tiny_config


@pytest.fixture(scope="session")
def tiny():
    """(config, params) of a 2-layer, 4-head (GQA 2) random model with 128 tokens."""
    config = tiny_config()
    return config, init(jax.random.key(0), config)
