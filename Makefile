# Two commands for a newcomer: `make up` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test install lint typecheck unit component integration bench bench-gateway bench-policy bench-streams bench-replay bench-cli bench-growth clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# One gateway process per core, less the other parts' share (GOVLEDGER_GATEWAY_PROCESSES=0,
# gateway/processes.py); each process also serves its own /metrics on 9180, 9181, ...
up: $(STAMP)
	GOVLEDGER_GATEWAY_PROCESSES=$${GOVLEDGER_GATEWAY_PROCESSES:-0} \
	GOVLEDGER_GATEWAY_METRICS_PORT=$${GOVLEDGER_GATEWAY_METRICS_PORT:-9180} \
	$(BIN)/govledger up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/property

# The gateway, admin API and query API in-process (no broker, store or Faust): seconds.
component: $(STAMP)
	$(BIN)/pytest -q tests/component

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

# Four test processes (-n 4) on two cores: the stack tests mostly wait on their stacks
# (whole suite here: 424 s with -n 2, 318 s with -n 3 in issue 12; after issues 14-17,
# 485 s with -n 3 and 406 s with -n 4 on the same busy machine, 388 s with -n 4 quiet;
# the same CPU). A module runs whole
# in one process (--dist loadfile: its stack fixture boots once), modules in the order
# tests/conftest.py gives (longest first, kept).
test: lint typecheck $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n 4 --dist loadfile --no-loadscope-reorder --durations=12 tests

bench: $(STAMP)
	$(BIN)/python bench/e2e.py

bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway.py

bench-policy: $(STAMP)
	$(BIN)/python bench/policy.py

bench-streams: $(STAMP)
	$(BIN)/python bench/streams.py

bench-replay: $(STAMP)
	$(BIN)/python bench/replay.py

bench-cli: $(STAMP)
	$(BIN)/python bench/cli_start.py

# Start-up with 1k-100k keys, queries over 1M-10M rows, an export of 1M, the worker's
# wallets (about 40 min on this busy 2-core machine; `bench/growth.py --quick`: minutes).
bench-growth: $(STAMP)
	$(BIN)/python bench/growth.py

clean:
	rm -rf $(VENV) .govledger .mypy_cache .ruff_cache .pytest_cache
