"""Every Python block of README.md runs as written (in the repository root, each in a fresh
namespace). Blocks that load a shipped model by its registry name use the real
SmolLM2-135M-Instruct and are marked slow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from headjax.io.pretrained import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_blocks(path: Path = ROOT / "README.md") -> list[tuple[int, str]]:
    """(first line number, source) of each ```python block of `path`."""
    text = path.read_text()
    return [(text[: m.start(1)].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


def _param(line: int, source: str):
    real_model = any(f'"{name}"' in source or f"'{name}'" in source for name in REGISTRY)
    return pytest.param(line, source, id=f"README.md:{line}",
                        marks=[pytest.mark.slow] if real_model else [])


def test_readme_has_python_blocks():
    assert readme_blocks(), "README.md lost its Python examples"


@pytest.mark.parametrize("line, source", [_param(*block) for block in readme_blocks()])
def test_readme_block_runs(line, source, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = compile("\n" * (line - 1) + source, str(ROOT / "README.md"), "exec")
    exec(code, {"__name__": f"readme_block_{line}"})
