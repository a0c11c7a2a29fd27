# The README's two commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: demo test lint install results clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check contrastive_jax experiments tests benchmarks
	$(PY) -m ruff format --check contrastive_jax experiments tests benchmarks

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache *.egg-info

# The results table of experiments/results/results.md (about 2 h on a 2-core CPU; not part of CI).
results: $(STAMP)
	$(PY) -m experiments.results
