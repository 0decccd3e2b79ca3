# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv demo-model benchmarks slicer-env clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/virtual-biopsy demo --out demo-output --overwrite

# One pytest worker per core; a test file stays on one worker (its module fixtures are built once).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo-model: $(STAMP)
	$(BIN)/virtual-biopsy-train demo-model --out VirtualBiopsyLib/Resources/DemoModel

benchmarks: $(STAMP)
	$(BIN)/python Testing/benchmarks/bench_read_preprocess.py
	$(BIN)/python Testing/benchmarks/bench_predict.py
	$(BIN)/python Testing/benchmarks/bench_worker.py
	$(BIN)/python Testing/benchmarks/bench_training.py
	$(BIN)/python Testing/benchmarks/bench_cache_fill.py
	$(BIN)/python Testing/benchmarks/bench_report.py

# Slicer 5.12's bundled packages: pip dry-run of the module's set + inference tests (CI runs it)
slicer-env: $(STAMP)
	$(BIN)/python Testing/SlicerEnvironment/check_slicer_512.py

clean:
	rm -rf $(VENV) .venv-slicer512 build *.egg-info
