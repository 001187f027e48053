"""A user's mistake reaches the user as one line `error: ...` and exit status 2, checked before
the model loads; `--verbose` keeps the traceback; no script overwrites what is there unasked.

Bad inputs tried: an unknown key in a config file and in a `--config.` override, a string in an
int field, an unknown task (with a model that would fail to load: the task is named first), a
malformed and an empty data file, an unknown model name, a truncated GGUF file, a config file
that does not exist, `scripts/convert.py` into a folder holding the user's own config.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from gguf_files import write_llama_gguf
from helpers_tasks import concatenated, digit_task, tiny_run_config

from headjax.app import cli
from headjax.app.experiment import check_inputs, load_model
from headjax.io.layout import to_checkpoint
from headjax.model import init, tiny_config

ROOT = Path(__file__).resolve().parent.parent
TASK = "cli_echo_digits"


@pytest.fixture(scope="module", autouse=True)
def echo_task():
    digit_task(TASK, concatenated)


@pytest.fixture(scope="module")
def truncated_gguf(tmp_path_factory) -> Path:
    """A llama GGUF file cut off in its tensor data."""
    config = tiny_config(vocab_size=259, num_layers=1)
    params = init(jax.random.key(0), config)
    tensors = {k: np.asarray(v, np.float32) for k, v in to_checkpoint(params, config, "hf").items()}
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    write_llama_gguf(str(path), tensors, dict(
        num_hidden_layers=1, max_position_embeddings=64, hidden_size=32, intermediate_size=64,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


def _config_file(tmp_path: Path, body: str, model: str) -> Path:
    path = tmp_path / "run_config.py"
    path.write_text(textwrap.dedent(f"""\
        from helpers_tasks import tiny_run_config


        def get_config():
            c = tiny_run_config({model!r}, {str(tmp_path / 'run')!r}, ("basic_arithmetic",))
        """) + textwrap.indent(textwrap.dedent(body), "    ") + "    return c\n")
    return path


def test_unknown_key_in_a_config_file(tmp_path, tiny_model_dir):
    path = _config_file(tmp_path, "c.train.lrr = 1\n", str(tiny_model_dir))
    line = _one_error_line(_script("train.py", f"--config={path}"))
    assert line == (f"error: {path}:6: unknown config key 'lrr' (did you mean 'lr'?)")
    assert not (tmp_path / "run").exists()


def test_mistyped_key_and_value_on_the_command_line(tmp_path, tiny_model_dir):
    path = _config_file(tmp_path, "", str(tiny_model_dir))
    line = _one_error_line(_script("train.py", f"--config={path}", "--config.train.lrr=1"))
    assert line == "error: --config.train.lrr: unknown config key 'lrr' (did you mean 'lr'?)"
    line = _one_error_line(_script("train.py", f"--config={path}", "--config.train.steps=abc"))
    assert "--config.train.steps=abc" in line
    line = _one_error_line(_script("train.py", f"--config={tmp_path / 'missing.py'}"))
    assert "missing.py" in line


def test_unknown_task_is_named_before_the_model_loads(tmp_path, truncated_gguf):
    body = "c.data.tasks = ('no_such_task',)\n"
    path = _config_file(tmp_path, body, str(truncated_gguf))
    line = _one_error_line(_script("train.py", f"--config={path}"))
    assert line.startswith("error: unknown task 'no_such_task'; registered tasks:")
    verbose = _script("train.py", f"--config={path}", "--verbose")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr
    assert "unknown task 'no_such_task'" in verbose.stderr


def _problem(config) -> str:
    with pytest.raises(cli.UserError) as info, cli.user_errors():
        check_inputs(config)
        load_model(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_data_and_model_mistakes_are_one_line(tmp_path, tiny_model_dir, truncated_gguf):
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"prompt": "1+1", "answer": "2"}\n{"prompt": "2+2", "answer": \n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = tiny_run_config(tiny_model_dir, tmp_path / "run", (str(malformed),))
    assert _problem(config) == f"{malformed}:line 2: invalid JSON (Expecting value at column 29)"
    config.data.tasks = (str(empty),)
    assert _problem(config) == f"{empty}: no usable rows (0 malformed)"
    config.data.tasks = (TASK,)
    config.model.pretrained = "smollm2-135m"
    assert _problem(config).startswith("smollm2-135m: not a known model name")
    config.model.pretrained = str(truncated_gguf)
    assert _problem(config).startswith(f"{truncated_gguf}: not a readable GGUF file")
    config.model.pretrained = str(tiny_model_dir)
    heads = tmp_path / "heads.npy"
    config.train.trainable_heads = str(heads)
    assert _problem(config) == f"config.train.trainable_heads: {heads}: no such file"


def test_convert_never_overwrites_unasked(tmp_path, tiny_model_dir):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    line = _one_error_line(_script("convert.py", f"--input={tiny_model_dir}", f"--output={out}",
                                   "--to=hf"))
    assert line == (f"error: {out}: already exists and is not empty; choose a new path or pass "
                    "--overwrite (overwrite=True) to replace it")
    assert (out / "config.json").read_text() == '{"mine": true}'
    line = _one_error_line(_script("convert.py", "--input=no-such-model", f"--output={tmp_path}/x"))
    assert line.startswith("error: no-such-model: not a known model name")


def test_writers_replace_only_when_asked(tmp_path, tiny):
    from headjax.io import export_hf, load_native, save_native

    config, params = tiny
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        export_hf(str(out), params, config)
    assert (out / "config.json").read_text() == '{"mine": true}'
    export_hf(str(out), params, config, overwrite=True)
    assert '"mine"' not in (out / "config.json").read_text()

    native = tmp_path / "native"
    native.mkdir()  # an empty folder is fine
    save_native(str(native), params, config)
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        save_native(str(native), params, config)
    doubled = jax.tree.map(lambda p: 2 * p, params)
    save_native(str(native), doubled, config, overwrite=True)
    restored, _, _ = load_native(str(native))
    np.testing.assert_array_equal(restored["embed"], 2 * np.asarray(params["embed"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "native"]  # no leftovers


def test_evaluate_and_benchmark_keep_earlier_results(tmp_path, tiny_model_dir):
    earlier = tmp_path / "evaluated" / "eval" / "step_000000.jsonl"
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"task": "mine"}\n')
    config = _config_file(tmp_path, "", str(tiny_model_dir))
    line = _one_error_line(_script("evaluate.py", f"--config={config}",
                                   f"--out={tmp_path / 'evaluated'}"))
    assert line.startswith(f"error: {earlier}: already exists;")
    results = tmp_path / "bench.json"
    results.write_text("{}")
    line = _one_error_line(_script("benchmark.py", f"--output={results}"))
    assert line.startswith(f"error: {results}: already exists;")
    assert earlier.read_text() == '{"task": "mine"}\n' and results.read_text() == "{}"
