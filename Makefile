# The two commands README.md documents. `make install` is what both need on a fresh machine.
PYTHON ?= python3

.PHONY: install pipeline test
install:
	$(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -m pip install -e ".[test,bench]"

pipeline: install
	trl-ext pipeline --config recipes/configs/tiny.yaml

test: install
	OMP_NUM_THREADS=2 $(PYTHON) -m pytest -q tests
