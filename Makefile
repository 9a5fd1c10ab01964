# arbstr developer tasks. Every target creates .venv and installs what it needs from PyPI.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Claude Code and Codex CLI for tests/test_real_clients.py, pinned in package.json (npm).
CLIENTS := .clients
CLIENTS_STAMP := $(CLIENTS)/.installed

.PHONY: demo test lint bench clients clean postgres

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(CLIENTS_STAMP): package.json
	mkdir -p $(CLIENTS)
	cp package.json $(CLIENTS)/package.json
	cd $(CLIENTS) && npm install --no-audit --no-fund --no-package-lock --loglevel=error
	$(CLIENTS)/node_modules/.bin/claude --version
	$(CLIENTS)/node_modules/.bin/codex --version
	touch $(CLIENTS_STAMP)

clients: $(CLIENTS_STAMP)

# PostgreSQL server binaries for the request-log tests on PostgreSQL (tests/pg_server.py starts
# its own server from them); Debian's package, installed only when no initdb is there.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing PostgreSQL (apt-get) for the tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq >/dev/null && \
		apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

demo: $(STAMP)
	$(VENV)/bin/arbstr serve --mock --listen 127.0.0.1:8080

test: $(STAMP) $(CLIENTS_STAMP) postgres
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

# Proxy overhead vs a direct upstream, ~2-3 min; installs wrk with apt-get when missing.
# Options: make bench BENCH_ARGS="--quick" (or --strict, --requests N; see python -m bench -h)
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CLIENTS) .mypy_cache .pytest_cache .ruff_cache .hypothesis
