# `make test` and `make demo` set everything up themselves on a fresh clone (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=
CHROMIUM := /usr/bin/chromium
PGBOUNCER := /usr/sbin/pgbouncer

.PHONY: setup test demo bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP) $(CHROMIUM) $(PGBOUNCER)
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

# The dashboard's browser tests drive Debian's chromium (never a downloaded browser build);
# the transaction-pooling tests start Debian's pgbouncer in front of the test PostgreSQL.
$(CHROMIUM):
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

# The PgBouncer tests start Debian's pgbouncer themselves (tests/pgbouncer.py); the package's own
# service is not needed.
$(PGBOUNCER):
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer

# The demo shop: SMTP server, web app on 127.0.0.1:8000 (PORT overrides), two workers, dashboard at /admin.
# DEMO_ORDERS=N places N orders; DATABASE_URL=postgresql://... runs it on PostgreSQL; Ctrl-C stops it all.
demo: $(STAMP)
	$(BIN)/python -m examples.shop.demo

bench: $(STAMP)
	$(BIN)/python bench/run.py --backend sqlite
	$(BIN)/python bench/run.py --backend postgres

lint: $(STAMP)
	$(BIN)/ruff check conveyor tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache test-output
