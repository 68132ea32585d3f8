# Two commands do everything: `make book` builds the book, `make test` runs every test.
# Each creates .venv and installs what it needs (once; later runs skip the install).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BOOK := _build/book

.PHONY: help install book test test-slow export clean-nbs readme bench clean

help:
	@echo "make book       build the HTML book into $(BOOK)/_build/html (executes every notebook)"
	@echo "make test       export/clean checks, nbdev_test over every notebook, pytest tests/"
	@echo "make test-slow  nbdev_test including the cells flagged #| slow"
	@echo "make export     nbdev_export, then regenerate README.md from nbs/index.ipynb"
	@echo "make clean-nbs  strip outputs and metadata from the notebooks (nbdev_clean)"
	@echo "make bench      run the full optimizer benchmark (under 10 min on 2 cores), writing nbs/results/benchmark_full.json"

$(STAMP): setup.py settings.ini constraints-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-dev.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/python nbs/_scripts/readme.py

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

book: $(STAMP)
	$(BIN)/nbdev_export
	OMP_NUM_THREADS=1 $(BIN)/python nbs/_scripts/build_book.py --out $(BOOK)

# pytest first runs the fast sync checks (export, clean, README); the notebooks run in between.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_repo_sync.py
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest -q tests --ignore=tests/test_repo_sync.py

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --flags slow --timing

# The chapter "Which optimizer?" reads this file; commit it after a run.
bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m modern_updates.benchmark --config full --jobs 2 --out nbs/results/benchmark_full.json

clean:
	rm -rf _build _docs _proc build dist *.egg-info
