# Two commands are the whole set-up on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean chromium

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "function_flow needs Python 3.10 or newer (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/function-flow run samples/main.py --arg region=EMEA
	@echo; cat samples/output/sales_report.md

# One test process per core, at most 4 (each starts its own emulators); the
# long property and end-to-end tests are stolen by idle processes. Serial: PYTEST_WORKERS=
PYTEST_WORKERS ?= -n auto --maxprocesses=4 --dist worksteal

test: $(STAMP) chromium
	@$(BIN)/python -m function_flow.local.emulators --check
	$(BIN)/python -m pytest $(PYTEST_WORKERS)

# The dashboard's browser tests drive Debian's chromium (tests/test_dashboard_browser.py).
chromium:
	@test -x /usr/bin/chromium || { \
		echo "installing chromium for the dashboard's browser tests (apt-get install -y chromium)"; \
		apt-get install -y chromium >/dev/null 2>&1 || \
		{ apt-get update >/dev/null 2>&1 && apt-get install -y chromium >/dev/null 2>&1; } || \
		{ echo "the dashboard's browser tests need /usr/bin/chromium: install it as root with"; \
		  echo "  apt-get update && apt-get install -y chromium"; exit 1; }; }

bench: $(STAMP)
	$(BIN)/python bench/engine_bench.py

clean:
	rm -rf $(VENV) .function_flow samples/output .pytest_cache
