# `make test` is the one command that sets up everything the tests need and runs them all.

PYTHON ?= python3
VENV := .venv
RUNNER_REQUIREMENTS := sandbox/runner/requirements.txt

.PHONY: test venv lint bench

# A Python virtual environment with the pinned pytest the runner drives.
$(VENV)/.installed: $(RUNNER_REQUIREMENTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(RUNNER_REQUIREMENTS)
	touch $@

venv: $(VENV)/.installed

test: venv
	cargo test --workspace --locked

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

bench: venv
	cargo run --release --locked -- bench score
