# Two entry points for a fresh machine: `make run` and `make test`.
# Each creates .venv if missing and (re)installs only when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov in a virtualenv of its own (tools/checkov.txt says why)
CHECKOV_VENV  := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: run test lint typecheck clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(CHECKOV_STAMP): tools/checkov.txt | $(STAMP)
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r tools/checkov.txt
	@touch $(CHECKOV_STAMP)

run: $(STAMP)
	$(BIN)/fsd run

test: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download \
		--framework cloudformation --file template.yaml
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
