# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install demo test lint typecheck bench test-vllm clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make demo: the built-in simulated fleet and the router, under conversational load
demo: $(STAMP)
	$(BIN)/firsttoken demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check router tests benchmarks
	$(BIN)/ruff format --check router tests benchmarks || true

typecheck: $(STAMP)
	$(BIN)/mypy

## make test: lint, types and the default test suite (pytest exit 5, no tests, fails)
test: $(STAMP)
	$(BIN)/ruff check router tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
