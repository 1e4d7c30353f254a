# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FIFTYONE_DO_NOT_TRACK := true
export FIFTYONE_DATABASE_VALIDATION := false
export NO_ALBUMENTATIONS_UPDATE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install browser test demo bench bench-pseudo bench-pseudo-gpu bench-ingest bench-review bench-train bench-manifest lint clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints-cpu.txt scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

# Debian's chromium, for the test that screenshots the FiftyOne App in a real headless browser
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test: install browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests

DEMO := demo_out
DETECTOR ?=
CLIP ?=

demo: install
	$(BIN)/python examples/demo.py --out $(DEMO) $(if $(DETECTOR),--detector $(DETECTOR)) $(if $(CLIP),--clip $(CLIP))

bench: install
	$(BIN)/python benchmarks/convert_o365.py --json $(DEMO)/bench_convert_o365.json

bench-ingest: install
	$(BIN)/python benchmarks/convert_goldg.py
	$(BIN)/python benchmarks/convert_grit.py

bench-review: install
	$(BIN)/python benchmarks/review_build.py

bench-manifest: install
	$(BIN)/python benchmarks/manifest_scale.py

bench-train: install
	$(BIN)/python benchmarks/train_throughput.py

bench-pseudo: install
	$(BIN)/python benchmarks/pseudo_throughput.py --json $(DEMO)/bench_pseudo.json

# on a GPU machine (with a CUDA torch installed): images/s per GPU and the GPU's busy fraction
bench-pseudo-gpu: install
	$(BIN)/python benchmarks/pseudo_gpu.py --json $(DEMO)/bench_pseudo_gpu.json

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo_out runs .pytest_cache
