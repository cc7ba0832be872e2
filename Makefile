# ANIMAL-SPOT fork: set-up, tests, demo and benchmarks.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo bench clean

venv: $(STAMP)

# Rebuilt from scratch whenever requirements.txt changes.
$(STAMP): requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) ANIMAL-SPOT/demo.py --out demo_output

bench: $(STAMP)
	$(PY) bench/predict_bench.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
