# Cloudless developer targets. `make test` is the README's test command; `make demo` the main job.
PY      ?= .venv/bin/python
PIP     ?= .venv/bin/pip
STAMP   := .venv/.installed
PROTOS  := $(shell find cloudless/api/protos -name '*.proto' 2>/dev/null)

.PHONY: setup test test-unit test-integration test-chaos lint fmt typecheck coverage proto proto-check bench demo clean

setup: $(STAMP)
	@bash scripts/install-system-deps

# The venv's own pip (23.0 on Debian 12) installs an editable pyproject project; it is not
# upgraded first (a round trip to the index on every fresh setup).
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	@$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)

# Unit, contract and sim run beside the integration suite; the chaos suite (real netns
# clusters, needs root: tests/chaos/cluster/README.md) runs after them, alone; any pytest
# failing fails the target (scripts/run-tests).
test: setup proto-check
	@PY=$(PY) bash scripts/run-tests

test-unit: setup
	$(PY) -m pytest -q tests/unit tests/contract tests/sim

test-integration: setup
	$(PY) -m pytest -q tests/integration

test-chaos: setup
	$(PY) -m pytest -q tests/chaos

lint: setup
	$(PY) -m ruff check cloudless tests bench
	$(PY) -m ruff format --check cloudless tests bench

fmt: setup
	$(PY) -m ruff format cloudless tests bench
	$(PY) -m ruff check --fix cloudless tests bench

typecheck: setup
	$(PY) -m mypy cloudless

coverage: setup
	$(PY) -m pip install -q coverage
	$(PY) -m coverage run -m pytest -q tests/unit tests/contract tests/sim tests/integration
	$(PY) -m coverage report

proto: setup
	$(PY) scripts/gen_protos.py

proto-check: setup
	$(PY) scripts/gen_protos.py --check

bench: setup
	$(PY) -m bench

demo: setup
	$(PY) -m cloudless.demo

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
