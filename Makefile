# lineclear developer entry points. `make demo` and `make test` work on a fresh machine:
# they create and fill .venv when it is missing (a second run does not reinstall).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch wheels that lie on this kind of machine's disk; pyproject.toml accepts any torch >= 2.2.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.lineclear-installed
PYTEST_ARGS ?=

.PHONY: all install test test-all fuzz demo bench readme results clean help
.DELETE_ON_ERROR:

help:
	@echo "make demo      set up, then run every stage on one synthetic view (prints metrics + report path)"
	@echo "make test      set up, then run the test suite (slow tests excluded; see make test-all)"
	@echo "make fuzz      the long reader fuzzing and SIGKILL runs (make test runs short ones)"
	@echo "make bench     speed and detection-quality benchmarks (benchmarks/)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,station,onnx,openvino]'
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The reader fuzz tests with 25 times as many inputs, fresh ones each run (LINECLEAR_FUZZ=long; failures are
# kept in .hypothesis/ and replayed first next time), and the slow SIGKILL test. Prints the counts.
fuzz: $(STAMP)
	LINECLEAR_FUZZ=long $(BIN)/python -m pytest -q tests/test_formats_fuzz.py tests/test_record_fuzz.py tests/test_crash_safety.py $(PYTEST_ARGS)

demo: $(STAMP)
	$(MAKE) --no-print-directory -C examples demo OUT=$(CURDIR)/demo-out LINECLEAR=$(abspath $(BIN))/lineclear PYTHON=$(abspath $(BIN))/python

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The README's results table: every model over every synthetic view at the `fast` preset, under all
# eight configurations of the thesis (pre/post masking x mask/none x registration/none). Two jobs at a
# time, one torch thread each (on 2 cores that beats two jobs fighting over two threads each).
RESULTS_MODELS ?= patchcore template draem ddad
RESULTS_CONFIGS ?= po-m-r po-nm-r po-m-nr po-nm-nr pre-m-r pre-nm-r pre-m-nr pre-nm-nr
results: $(STAMP)
	OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -C examples -j2 results OUT=$(CURDIR)/results-out MODELS="$(RESULTS_MODELS)" \
	    CONFIGS="$(RESULTS_CONFIGS)" PRESET=fast EVAL_ARGS="--max-overlays 4" \
	    LINECLEAR=$(abspath $(BIN))/lineclear PYTHON=$(abspath $(BIN))/python
	$(BIN)/python scripts/build_readme.py

readme: $(STAMP)
	$(BIN)/python scripts/build_readme.py

clean:
	rm -rf demo-out results-out bench-out .pytest_cache
