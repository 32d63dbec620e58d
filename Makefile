# stirshaken: the two commands of the README are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup deps services demo testbed test test-fast fuzz stress bench bench-core bench-verify bench-serve bench-instructions bench-audit bench-inventory bench-records clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

deps:
	bash scripts/install-deps.sh

services:
	bash scripts/services.sh

## The main job on an embedded default: a local PKI, a signed call, verdicts.
demo: setup
	$(BIN)/stirshaken demo --dir demo-pki
	$(BIN)/stirshaken testbed

## Everything the tests need (peers, services, venv), then the whole suite.
test: setup deps services
	$(BIN)/pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -q -m "not interop" $(PYTEST_ARGS)

## Coverage-guided fuzzing of every parser (atheris), FUZZ_SECONDS (default 60) per target; FUZZ_TARGETS picks some.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: $(VENV)/.fuzz-installed
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m fuzz $(FUZZ_TARGETS)

$(VENV)/.fuzz-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,fuzz]'
	touch $@

## Bounded stress run of `serve` (about a minute): pipelining, slowloris, SIP desync, SIGTERM, dying workers, Redis restart.
stress: setup
	$(BIN)/python bench/stress.py

bench: bench-core bench-verify bench-serve

bench-core: setup
	$(BIN)/python bench/bench_core.py

bench-verify: setup
	$(BIN)/python bench/bench_verify.py

bench-serve: setup deps
	bash bench/bench_serve.sh

bench-instructions: setup
	$(BIN)/python bench/count_instructions.py

## stirshaken audit over a generated capture of 200,000 signed INVITEs vs the warm verifier
bench-audit: setup
	$(BIN)/python bench/bench_audit.py

bench-inventory: setup
	$(BIN)/python bench/bench_inventory.py --serve

## REST throughput with per-call records off / to the log / to PostgreSQL (127.0.0.1:5432, db test), and instructions per request
bench-records: setup
	$(BIN)/python bench/bench_records.py --together --control --db-only --rounds 10 --seconds 2 --instructions

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist src/*.egg-info
