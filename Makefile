# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FIFTYONE_DO_NOT_TRACK := true
export FIFTYONE_DATABASE_VALIDATION := false
export NO_ALBUMENTATIONS_UPDATE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install test demo bench lint browser clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints-cpu.txt scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests

demo: install
	$(BIN)/python examples/run_demo.py

bench: install
	$(BIN)/python benchmarks/convert_o365.py

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo_out .pytest_cache
