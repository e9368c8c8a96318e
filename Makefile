# Two entry points for a fresh machine: `make run` and `make test`.
# Each creates .venv if missing and (re)installs only when pyproject.toml changed (or the
# C layer kernel, which the install compiles): `make run` installs what the run needs
# (the runtime dependencies), `make test` adds the development tools (the `dev` extra:
# pytest, ruff, mypy, cfn-lint, aws-sam-cli, ...), also into a venv `make run` made.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# checkov in a virtualenv of its own (tools/checkov.txt says why)
CHECKOV_VENV  := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# --no-compile: pip would byte-compile every module it installs (moto alone has hundreds
# that a run never imports); Python compiles what is imported, once, on first use.
PIP    := $(BIN)/python -m pip install --quiet --no-compile
# What an install depends on: the package's metadata and the C kernel it compiles.
INSTALL_INPUTS := pyproject.toml setup.py src/fsd_inference/kernel/fused.c \
                  src/fsd_inference/kernel/fused_layer.h

.PHONY: run test report lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(RUN_STAMP): $(INSTALL_INPUTS) | $(BIN)/python
	$(PIP) -e .
	@touch $@

# The dev extra includes everything the run needs, so it also stands for the run's stamp.
$(DEV_STAMP): $(INSTALL_INPUTS) | $(BIN)/python
	$(PIP) -e '.[dev]'
	@touch $(RUN_STAMP) $@

$(CHECKOV_STAMP): tools/checkov.txt | $(BIN)/python
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --no-compile -r tools/checkov.txt
	@touch $(CHECKOV_STAMP)

# PYTHONDONTWRITEBYTECODE cleared for the run: where it is set (some CI and sandboxed
# shells set it), every run compiled moto, boto3 and the rest from source again, in the
# driver and in each function's fork server (about 2.5 s of CPU in the driver alone);
# cleared, Python caches what the first run imports, as it does by default.
run: $(RUN_STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/fsd run

test: $(DEV_STAMP) $(CHECKOV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download \
		--framework cloudformation --file template.yaml
	$(BIN)/python -m pytest -q

# bench/REPORT.md from scratch: the validation against every published run, then the
# predictions (cached per configuration under bench/report-cache; the ones not cached take
# minutes each, 65536 x 120 much longer), the plots and the planner's column.
report: $(RUN_STAMP)
	cd bench && ../$(BIN)/python published.py --queue published-runs/fsd-published-queue.csv \
		--object published-runs/fsd-published-object.csv --out predictions.csv
	cd bench && ../$(BIN)/python report.py --validation predictions.csv $(REPORT_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache build src/fsd_inference/kernel/*.so
