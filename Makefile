# Two entry points for a fresh machine: `make run` and `make test`.
# Each creates .venv if missing and (re)installs only when pyproject.toml changed (or the
# C layer kernel, which the install compiles).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck clean

$(STAMP): pyproject.toml setup.py src/fsd_inference/kernel/fused.c src/fsd_inference/kernel/fused_layer.h
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/fsd run

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache build src/fsd_inference/kernel/*.so
