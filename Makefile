# Two commands do everything: `make book` builds the book, `make test` runs every test.
# Each creates .venv and installs what it needs (once; later runs skip the install).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BOOK := _build/book

.PHONY: help install book test test-slow export clean-nbs readme bench bench-speed metrics clean

help:
	@echo "make book       build the HTML book into $(BOOK)/_build/html (executes every notebook)"
	@echo "make test       export/clean checks, nbdev_test over every notebook, pytest tests/ (Triton kernels in the interpreter),"
	@echo "                then the browser test of the last book built (skipped, saying so, without a Chromium)"
	@echo "make test-slow  nbdev_test including the cells flagged #| slow"
	@echo "make export     give new notebooks their install cell, nbdev_export, then regenerate README.md from nbs/index.ipynb"
	@echo "make clean-nbs  strip outputs and metadata from the notebooks (nbdev_clean)"
	@echo "make bench      run the full optimizer benchmark on six workloads (about 6 min on 2 idle cores), writing nbs/results/benchmark_full.json"
	@echo "make bench-speed  time one optimizer step against torch (and the norm layers; on a GPU, a GPT-2-small training iteration) on this machine, into nbs/results/"
	@echo "make metrics    open the built book in Chromium at 1280 and 400 px and print what a reader sees"

$(STAMP): setup.py settings.ini constraints-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-dev.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

export: $(STAMP)
	$(BIN)/python nbs/_scripts/add_install_cell.py
	$(BIN)/nbdev_export
	$(BIN)/python nbs/_scripts/readme.py

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

book: $(STAMP)
	$(BIN)/nbdev_export
	OMP_NUM_THREADS=1 $(BIN)/python nbs/_scripts/build_book.py --out $(BOOK)

# pytest first runs the fast sync checks (export, clean, README); the notebooks run in between.
# The Triton kernels run on the CPU through Triton's interpreter. The browser test checks the book that the
# last `make book` built (_build/book); without a built book or a Chromium it says that it skipped.
TRITON_TESTS := $(wildcard tests/test_triton_*.py)
test: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_repo_sync.py
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing --skip_file_re '^9[12]_'
	# The Triton appendices run apart, in a process that picks Triton's CPU interpreter before anything imports triton.
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 1 --timing --skip_file_re '^(?!9[12]_)'
	$(BIN)/python -m pytest -q tests --ignore=tests/test_repo_sync.py --ignore=tests/test_browser.py --ignore-glob='tests/test_triton_*.py'
ifneq ($(TRITON_TESTS),)
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q $(TRITON_TESTS)
endif
	$(BIN)/python -m pytest -q -rs tests/test_browser.py

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --flags slow --timing

# The chapter "Which optimizer?" reads this file; commit it after a run.
bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m modern_updates.benchmark --config full --jobs 2 --out nbs/results/benchmark_full.json

# Writes nbs/results/speed_<device>.json (the module's default --out); one thread, so that numbers compare.
bench-speed: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m modern_updates.benchmark.speed

metrics: $(STAMP)
	$(BIN)/python nbs/_scripts/book_metrics.py $(BOOK)/_build/html

clean:
	rm -rf _build _docs _proc build dist *.egg-info
