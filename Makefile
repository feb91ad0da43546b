# Fresh machine: `make demo` trains on the bundled sample data; `make test` runs the tests.
# Both create .venv and install what they need on first use.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA := local_test/data
HPS := local_test/test_dir/input/config/hyperparameters.json

.PHONY: help venv sample-data demo train-demo test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt container/requirements.txt container/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt -e container
	touch $@

venv: $(VENV)/.installed  ## create .venv with the image's packages plus the test tools

$(DATA)/.done: scripts/make_sample_data.py | $(VENV)/.installed
	rm -rf $(DATA)
	$(PY) scripts/make_sample_data.py $(DATA)
	touch $@

sample-data: $(DATA)/.done  ## write the sample channels (handwritten digits) to local_test/data

demo: train-demo  ## train on the sample data the way SageMaker runs `train` (no docker needed)

train-demo: venv sample-data
	$(PY) scripts/local_train.py --data $(DATA) --base build/demo --hyperparameters $(HPS)

test: venv  ## run the test suite
	$(PY) -m pytest tests

clean:  ## remove build outputs and the sample data (keeps .venv)
	rm -rf build $(DATA)
