# croissant-cutouts: two commands do all set-up on a fresh machine.
#   make demo   create .venv, install, simulate jobs, run the whole flow, print the test metrics
#   make test   create .venv if needed, run the tests
#   make docs   build the documentation site into docs/_build/html
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo

.PHONY: demo test lint bench clean venv repro docs

lint: $(STAMP)
	$(BIN)/ruff check .

venv: $(STAMP)

# every extra, the test tools, and torch's CPU build (constraints.txt)
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cutouts simulate -o $(DEMO)/jobs
	$(BIN)/cutouts run -i $(DEMO)/jobs -o $(DEMO)/dataset
	@echo "dataset: $(CURDIR)/$(DEMO)/dataset (croissant.json, master_index.csv, metrics.json, report.md)"

# two workers, one test file each (module fixtures are built once), the costly files first
# (tests/conftest.py); about 9 minutes on two AMD EPYC vCPUs
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile

# the documentation site (docs/): every warning or broken reference fails the build;
# open docs/_build/html/index.html
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -n -b html docs docs/_build/html

# rebuild the DVC pipeline (dvc.yaml) with the venv's tools on PATH
repro: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_startup.py --repeat 7
	$(BIN)/python benchmarks/bench_create.py --repeat 3
	$(BIN)/python benchmarks/bench_memory.py --jobs 4 --layout shards

clean:
	rm -rf $(DEMO) .prefect .pytest_cache
