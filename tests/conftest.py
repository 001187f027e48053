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


@pytest.fixture(scope="session")
def tiny_model_dir(tiny, tmp_path_factory):
    """The tiny model saved as a native model directory with the hermetic ChatML tokenizer."""
    from helpers_tokenizer import chatml_tokenizer

    from headjax.io.native import save_native

    config, params = tiny
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_native(str(path), params, config, chatml_tokenizer())
    return path
