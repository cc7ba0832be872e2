# ANIMAL-SPOT fork: set-up, tests, demo and benchmarks.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv browser test test-matrix demo bench clean

venv: $(STAMP)

# Rebuilt from scratch whenever a requirements file or pyproject.toml changes: the pinned
# core, the foundation encoders (their weights ship inside the packages), then this
# project itself (editable: the `animal-spot` command).
$(STAMP): requirements.txt requirements-foundation.txt pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-foundation.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The review page's test drives Debian's chromium through chromium-driver: installed here
# when missing (as root), else one message with the command to run.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  echo "installing Debian's chromium and chromium-driver (the review page's browser test)"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium \
	    chromium-driver >/dev/null; \
	else \
	  echo "make test needs Debian's chromium and chromium-driver (the review page's browser test):"; \
	  echo "  sudo apt-get install chromium chromium-driver"; exit 1; \
	fi

# Two workers (one per core); each torch uses one thread (tests/conftest.py).
test: $(STAMP) browser
	$(PY) -m pytest -q -n 2 --dist loadscope tests

# The suite under other thread counts and older instruction sets (kernel libraries
# round differently): about six times the suite's time, so not part of CI.
MATRIX := "OMP_NUM_THREADS=1" "OMP_NUM_THREADS=2" "ATEN_CPU_CAPABILITY=default" "ATEN_CPU_CAPABILITY=avx2" \
          "ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2" "MKL_CBWR=COMPATIBLE"
test-matrix: $(STAMP) browser
	@for variant in $(MATRIX); do \
	  echo "=== $$variant"; \
	  env $$variant $(PY) -m pytest -q -n 2 --dist loadscope -p no:cacheprovider tests || exit 1; \
	done

demo: $(STAMP)
	$(PY) ANIMAL-SPOT/demo.py --out demo_output
	@echo "Every other command runs in the project's environment: source $(VENV)/bin/activate (once per shell), then animal-spot --version"

bench: $(STAMP)
	$(PY) bench/predict_bench.py
	$(PY) bench/train_bench.py
	$(PY) bench/backbones_bench.py
	$(PY) bench/review_bench.py
	$(PY) bench/embedding_bench.py
	$(PY) bench/season_bench.py
	$(PY) bench/agile.py --speed --minutes 10

clean:
	rm -rf $(VENV) demo_output .pytest_cache
