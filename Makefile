# The two commands: `make demo` and `make test`. Each installs what it needs, pinned.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# Builds are large (the AWS SDK); keep them outside the clone so every checkout reuses them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/sagemaker-lifecycle/target
export LOCALAWS_PYTHON := $(abspath $(PY))
export PATH := $(abspath $(VENV)/bin):$(PATH)
# Lambda architecture of the package. Production is arm64 (the template's default); this
# machine builds x86_64.
ARCH ?= x86_64
FUNCTIONS := model-deployer alarm-responder drift-scanner endpoint-sweeper

CHECKOV_VENV := .venv-checkov

.PHONY: help tools test lint unit integration cfn-lint checkov build package demo bench bench-quick clean-venv

help:
	@echo "make demo     run the suite on a local AWS and show what it did"
	@echo "make test     fmt, clippy, unit and integration tests, the IAM proof, cfn-lint, checkov"
	@echo "make package  build the Lambda artifacts (ARCH=$(ARCH)) into dist/"
	@echo "make bench    cold start, peak memory and package size per function"

# Python tools (moto, cbor2, cfn-lint, cargo-lambda, zig), pinned, in a project virtualenv.
tools: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

test: tools lint unit integration cfn-lint checkov

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

unit:
	cargo test --workspace --lib --bins --quiet

# The integration tests record every call each function makes; the IAM check then judges them
# all by the template's policies (tests/iam/check.py).
CALL_LOG_DIR := $(abspath .localaws-calls)
integration: tools
	cd tests/localaws && ../../$(PY) -m unittest --quiet
	cd tests/iam && ../../$(PY) -m unittest --quiet
	rm -rf $(CALL_LOG_DIR) && mkdir -p $(CALL_LOG_DIR)
	LOCALAWS_CALL_LOG_DIR=$(CALL_LOG_DIR) cargo test -p integration --quiet
	$(PY) tests/iam/check.py --calls $(CALL_LOG_DIR)

cfn-lint: tools
	$(VENV)/bin/cfn-lint template.yaml

# Policy checks on the template, offline; each skipped check is justified beside its resource.
checkov: $(CHECKOV_VENV)/.installed
	BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation \
	  --quiet --compact --skip-download
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

# The functions as the tests build them (dev profile, the same dependency builds as `make test`):
# quick to build, and what the demo runs. Release builds are for `make package` and `make bench`.
build:
	cargo build --workspace --bins --quiet

# Release artifacts with cargo-lambda, linked by the pinned zig against an old glibc so they run
# on provided.al2023. arm64 needs the aarch64-unknown-linux-gnu Rust target installed.
package: tools
	cargo lambda build --release --$(subst _,-,$(ARCH)) $(foreach f,$(FUNCTIONS),--bin $(f)) \
	  --output-format zip --lambda-dir dist
	@ls -l dist/*/bootstrap.zip
	@if [ "$(ARCH)" != arm64 ]; then echo "note: built for $(ARCH); template.yaml deploys arm64 unless you pass Architecture=$(ARCH)"; fi

demo: tools build
	$(PY) tests/demo/demo.py --bin-dir $(CARGO_TARGET_DIR)/debug

bench: tools package
	$(PY) tests/demo/bench.py --dist dist

# Cold starts, peak memory and zip sizes only (about a minute after the package).
bench-quick: tools package
	$(PY) tests/demo/bench.py --dist dist --quick

clean-venv:
	rm -rf $(VENV) $(CHECKOV_VENV)
