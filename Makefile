# ANIMAL-SPOT fork: set-up, tests, demo and benchmarks.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-matrix demo bench clean

venv: $(STAMP)

# Rebuilt from scratch whenever requirements.txt changes.
$(STAMP): requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The suite under other thread counts and older instruction sets (kernel libraries
# round differently): about six times the suite's time, so not part of CI.
MATRIX := "OMP_NUM_THREADS=1" "OMP_NUM_THREADS=2" "ATEN_CPU_CAPABILITY=default" "ATEN_CPU_CAPABILITY=avx2" \
          "ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2" "MKL_CBWR=COMPATIBLE"
test-matrix: $(STAMP)
	@for variant in $(MATRIX); do \
	  echo "=== $$variant"; \
	  env $$variant $(PY) -m pytest -q -p no:cacheprovider tests || exit 1; \
	done

demo: $(STAMP)
	$(PY) ANIMAL-SPOT/demo.py --out demo_output

bench: $(STAMP)
	$(PY) bench/predict_bench.py
	$(PY) bench/train_bench.py
	$(PY) bench/backbones_bench.py
	$(PY) bench/review_bench.py
	$(PY) bench/embedding_bench.py
	$(PY) bench/season_bench.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
