# The two commands for a fresh machine:  make train   and   make test
PYTHON ?= python
# torch is installed only when missing (Colab/Kaggle keep theirs); override e.g. TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
# make bench: the quick benchmark versions (< 10 min on 2 cores); make bench FULL=1: the full-length runs
FULL ?=
# make test's pytest-xdist workers (one per core of a 2-core Colab/CI machine); TEST_WORKERS=0: one process
TEST_WORKERS ?= 2
BENCH_MODE = $(if $(FULL),,--quick)

.PHONY: install install-dev train test lint bench config-docs clean

# Only what is missing is installed: .ci/install_missing.py reads the installed packages' metadata and calls pip
# with the unsatisfied lines alone, or not at all (a second `make test` never runs pip).
install:
	@$(PYTHON) -c "import torch, torchvision" 2>/dev/null || $(PYTHON) -m pip install $(TORCH_SPEC)
	@$(PYTHON) .ci/install_missing.py requirements.txt

install-dev: install
	@$(PYTHON) .ci/install_missing.py requirements-dev.txt

train: install  ## the embedded default: digits, 40% symmetric noise, CE (add ARGS="method=tcl")
	$(PYTHON) train.py $(ARGS)

test: install-dev  ## lint + the whole test suite, then its 15 slowest tests (~9 min on an idle 2-core machine)
	$(PYTHON) -m ruff check .
	lint-imports
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 tests

lint:  ## ruff + the import layers (pyproject's [tool.importlinter])
	$(PYTHON) -m ruff check .
	lint-imports

bench: install  ## quick benchmarks, tables on stdout (FULL=1: full-length runs; BENCHMARKS.md has the results)
	$(PYTHON) bench/step_memory.py $(BENCH_MODE)
	$(PYTHON) bench/epoch_overhead.py $(BENCH_MODE)
	$(PYTHON) bench/noise_accuracy.py $(BENCH_MODE)
	@# cleanlab is compared with noise_accuracy's digits 50% TCL run (same config), not a second TCL run
	@if $(PYTHON) -c "import cleanlab" 2>/dev/null; then \
		$(PYTHON) bench/detection_vs_cleanlab.py $(BENCH_MODE) --tcl-run bench/out/noise_accuracy/digits_symmetric50_e30_tcl; \
	else echo "detection_vs_cleanlab skipped: pip install cleanlab (benchmark-only dependency)"; fi

config-docs:  ## regenerate docs/config.md's generated tables (config keys, datasets, architectures, views)
	$(PYTHON) -m tcl_lite config-docs --docs docs/config.md

clean:
	rm -rf runs bench/out .pytest_cache
