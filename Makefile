# Fresh machine: `make demo` trains on the bundled sample data; `make test` runs the tests.
# Both create .venv and install what they need on first use.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SDK3_VENV ?= build/sdk3
DATA := local_test/data
HPS := local_test/test_dir/input/config/hyperparameters.json

IMAGE ?= imgclf
TAG ?= latest
GIT_SHA := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# Optional: BASE_IMAGE, BUILDER_IMAGE, WITH_COMPILER, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST, CA_BUNDLE,
# TORCH_INDEX_URL, TORCH_VERSION, TORCHVISION_VERSION (another torch CUDA flavour: docs/gpu.md, build choices)
BUILD_ARGS := $(foreach v,BASE_IMAGE BUILDER_IMAGE WITH_COMPILER PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST TORCH_INDEX_URL TORCH_VERSION TORCHVISION_VERSION,$(if $($(v)),--build-arg $(v)="$($(v))"))

.PHONY: gpu-wheels gpu-check bench-stages bench-compiled bench-peers help venv venv-sdk3 test-sdk3 nginx sample-data demo train-demo tensorboard test test-fast docs clean build push train-local serve-local predict image-local bench audit

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt container/requirements.txt container/requirements-openvino.txt container/pyproject.toml scripts/requirements-sdk2.txt scripts/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt -e container -e scripts
	$(VENV)/bin/pip install -q --no-deps -r container/requirements-openvino.txt
	touch $@

venv: $(VENV)/.installed  ## create .venv: the image's packages, the launchers on SDK 2.x, the test tools

# The launchers on SDK 3.x in a venv of their own (2.x and 3.x cannot be installed together): the
# 3.x pins, imgclf without torch, and what tests/test_launchers.py needs.
$(SDK3_VENV)/.installed: scripts/requirements-sdk3.txt requirements-dev-sdk3.txt container/pyproject.toml scripts/pyproject.toml
	$(PYTHON) -m venv $(SDK3_VENV)
	$(SDK3_VENV)/bin/pip install -q --upgrade pip
	$(SDK3_VENV)/bin/pip install -q -r requirements-dev-sdk3.txt
	$(SDK3_VENV)/bin/pip install -q --no-deps -e container -e scripts
	touch $@

venv-sdk3: $(SDK3_VENV)/.installed  ## create build/sdk3: the launchers on SDK 3.x and their tests' tools (about 1 GB)

nginx:  ## install nginx (Debian package) if missing: `serve` runs it in front of gunicorn
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; \
		else echo "serve needs nginx: run 'sudo apt-get install nginx'" >&2; exit 1; fi; }

$(DATA)/.done: scripts/imgclf_launch/sample_data.py | $(VENV)/.installed
	rm -rf $(DATA)
	$(PY) scripts/make_sample_data.py $(DATA)
	touch $@

sample-data: $(DATA)/.done  ## write the sample channels (handwritten digits) to local_test/data

demo: train-demo  ## train on the sample data the way SageMaker runs `train` (no docker needed)

train-demo: venv sample-data  ## what make demo runs: a fresh build/demo, then local_train.py on the sample data
	rm -rf build/demo  # a fresh job each time (the base keeps checkpoints otherwise)
	$(PY) scripts/local_train.py --data $(DATA) --base build/demo --hyperparameters $(HPS)

# TensorBoard gets a venv of its own: .venv keeps protobuf 3.20.3 for smdebug, and 2.21 needs protobuf>=6.31.
tensorboard:  ## serve make demo's TensorBoard event files (or LOGDIR=...) on 127.0.0.1:6006
	test -x build/tensorboard/bin/tensorboard || { $(PYTHON) -m venv build/tensorboard && build/tensorboard/bin/pip install -q tensorboard==2.21.0; }
	build/tensorboard/bin/tensorboard --logdir $(or $(LOGDIR),build/demo/output/data/tensorboard) --host 127.0.0.1 --port 6006

test: venv nginx test-sdk3  ## the test suite in .venv (SDK 2.x), after the launcher tests on SDK 3.x (test-sdk3)
	$(PY) -m pytest tests

# The two-instance local-mode job is left to the 2.x run (the image's torchrun is the same; here it
# would add 5 minutes to CI): make test-sdk3 SDK3_ALL=1 runs it too.
test-sdk3: venv-sdk3  ## the launcher tests (tests/test_launchers.py) with SDK 3.x, in build/sdk3
	$(SDK3_VENV)/bin/python -m pytest tests/test_launchers.py \
		$(if $(SDK3_ALL),,--deselect tests/test_launchers.py::test_local_mode_two_instances_train_one_model)

test-fast: venv nginx  ## the in-process tests only (no training, no server, no docker, SDK 2.x only)
	$(PY) -m pytest tests -m "not slow and not docker" --durations=5

docs: venv  ## build the manual (docs/, mkdocs.yml) into build/site; --strict: a broken link or a page missing from the nav fails
	$(PY) -m mkdocs build --strict --site-dir build/site

build:  ## build the image $(IMAGE):$(TAG) (also tagged with the git sha)
	@if [ -n "$(CA_BUNDLE)" ]; then cp "$(CA_BUNDLE)" docker/ca/ca.pem; fi
	DOCKER_BUILDKIT=0 docker build --network host -f docker/Dockerfile $(BUILD_ARGS) --build-arg GIT_SHA=$(GIT_SHA) \
		-t $(IMAGE):$(TAG) -t $(IMAGE):$(GIT_SHA) . ; status=$$?; rm -f docker/ca/ca.pem; exit $$status
	@docker image inspect $(IMAGE):$(TAG) --format 'built $(IMAGE):$(TAG): {{.Size}} bytes'

push: venv  ## push $(IMAGE) to ECR as :latest and :<git sha> (account and region from your AWS config)
	docker/push.sh $(IMAGE) $(TAG) $(GIT_SHA)

train-local: sample-data  ## run the image's `train` on the sample data (local_test/test_dir mounted as /opt/ml)
	local_test/train_local.sh $(IMAGE):$(TAG)

serve-local:  ## run the image's `serve` on the model train-local made, at 127.0.0.1:8080
	local_test/serve_local.sh $(IMAGE):$(TAG)

predict:  ## POST a sample image to the server serve-local started
	local_test/predict.sh $$(ls $(DATA)/test/004.three/* | head -1)

image-local: venv  ## on a machine with no Docker engine: start one, then build the image
	docker/ci-build.sh $(IMAGE):$(TAG)

clean:  ## remove build outputs and the sample data (keeps .venv)
	rm -rf build $(DATA)

DEMO_MODEL := build/demo/model
bench: venv  ## training and serving benchmarks: forward-only limit, decode cost, serve, baseline, ratios
	$(PY) bench/train.py
	$(PY) bench/serve.py
	$(if $(wildcard $(DEMO_MODEL)/model.json),$(PY) bench/serve.py --model-dir $(DEMO_MODEL),@echo "bench: no $(DEMO_MODEL) (make demo writes it): the demo model left out")

bench-stages: venv  ## where a request's time goes inside serve's app (decode, queue, batch, forward, http) at concurrency 1 and 32
	$(PY) bench/stages.py

# ONNX Runtime, OpenVINO and NNCF (its int8 quantiser) in a venv of their own (about 1.5 GB with torch): measured, not in the image.
COMPILED_VENV := build/compiled
COMPILED_PINS := torch==2.14.1 torchvision==0.29.1 onnx==1.23.2 onnxruntime==1.32.0 openvino==2026.4.1 nncf==3.4.0 numpy==2.4.6
$(COMPILED_VENV)/.installed:
	$(PYTHON) -m venv $(COMPILED_VENV)
	$(COMPILED_VENV)/bin/pip install -q $(COMPILED_PINS)
	touch $@

bench-compiled: $(COMPILED_VENV)/.installed  ## ResNet-50 forward only: eager torch vs ONNX Runtime and OpenVINO (fp32, bf16), same cores
	$(COMPILED_VENV)/bin/python bench/compiled.py

# LitServe in a venv of its own: the server a user might pick instead, beside ours at the same concurrencies.
PEERS_VENV := build/peers
PEERS_PINS := litserve==0.2.19 torch==2.14.1 torchvision==0.29.1 pillow==12.0.0
$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q $(PEERS_PINS)
	touch $@

bench-peers: venv $(PEERS_VENV)/.installed  ## our serve beside LitServe with batching at concurrency 1/8/32, same model and cores
	$(PY) bench/peers.py --peers-python $(PEERS_VENV)/bin/python

# bench/gpu_check.sh on a machine with a GPU but no network: python3 there has torch, torchvision,
# numpy, Pillow, requests, scikit-learn, matplotlib and Werkzeug; these pure-Python wheels are the rest.
GPU_WHEELS := flask==3.1.3 blinker==1.9.0 itsdangerous==2.2.0 werkzeug==3.1.9
gpu-wheels:  ## download the wheels bench/gpu_check.sh installs on a bare GPU machine into build/wheels
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: -d build/wheels $(GPU_WHEELS)

gpu-check:  ## the GPU proof (bench/gpu_check.sh): training, forward-only, serving, precision, doctor; DRY=1 on the CPU
	bench/gpu_check.sh $(if $(DRY),--dry)

audit:  ## pip-audit the image's pinned requirements (needs PyPI's JSON API or OSV to be reachable)
	$(PYTHON) -m venv build/audit && build/audit/bin/pip install -q pip-audit==2.10.1
	build/audit/bin/pip-audit -r container/requirements.txt --progress-spinner off
