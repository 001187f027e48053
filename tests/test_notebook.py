"""examples/analysis.ipynb runs top to bottom in its small setting (HEADJAX_NOTEBOOK_SMALL=1: a
2-layer random model with SmolLM2's tokenizer, a few probe samples, 3 SFT steps)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "analysis.ipynb"


def test_notebook_runs_in_the_small_setting(monkeypatch):
    monkeypatch.setenv("HEADJAX_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    saved_outputs = sum(len(cell.get("outputs", [])) for cell in notebook.cells
                        if cell.cell_type == "code")
    assert saved_outputs > 0, "the notebook is saved with the outputs of a real run"
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "SMALL=True" in text and "R^2" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5
