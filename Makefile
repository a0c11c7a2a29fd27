# The README's two commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
REFS_STAMP := $(VENV)/.torch-refs-stamp
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: demo test lint install results notebooks clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# PyTorch references for the converter and tokenizer tests (never a runtime dependency).
# open_clip_torch goes in without its dependencies: they would replace the CPU torch with a
# CUDA build and pull torchvision; the tests stub the torchvision names it imports.
$(REFS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[torch-refs]'
	$(PY) -m pip install -q --no-deps 'open_clip_torch==3.3.0'
	touch $(REFS_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo

# Two workers (CI has two cores; tracing and XLA compilation are single-threaded), one test file
# per worker at a time so that module fixtures are built once.
test: $(REFS_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

lint: $(STAMP)
	$(PY) -m ruff check contrastive_jax experiments tests benchmarks
	$(PY) -m ruff format --check contrastive_jax experiments tests benchmarks

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache *.egg-info

# The results table of experiments/results/results.md (5 seeds; 3.2 hours on a 2-core CPU, the
# provenance lines in results.md give each comparison's measured time; not part of CI). Rows are saved
# as they land and reused while their code and config are unchanged, so it resumes where it stopped.
results: $(STAMP)
	$(PY) -m experiments.results

# Re-run the Colab notebooks with full settings and store their outputs (about 7 min on a 2-core CPU).
notebooks: $(STAMP)
	$(PY) colabs/refresh_outputs.py
