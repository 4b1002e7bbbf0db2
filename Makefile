# The two commands a newcomer needs: `make demo` and `make test`.
# Everything they need is installed here, into ./.venv (Python) and, if missing, redis-server.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEMO_SECONDS ?= 30

.PHONY: demo test lint typecheck unit bench clean redis-server redis-server-if-possible

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[producer,test,demo]'
	touch $(STAMP)

# redis-server for the tests and the benchmarks: they need it, so a failed install stops make.
redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

# redis-server for the demo where it can be installed (apt-get, as root). The demo runs on
# fakeredis without it, so no apt-get, no root or a failed install only says so.
redis-server-if-possible:
	@command -v redis-server >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" -eq 0 ]; then \
	    echo "installing redis-server (Debian package)"; \
	    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	  else false; fi \
	  || echo "redis-server not installed: the demo uses fakeredis instead"; }

demo: $(STAMP) redis-server-if-possible
	$(BIN)/marketbus demo --duration $(DEMO_SECONDS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) redis-server lint typecheck
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

bench: $(STAMP) redis-server
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
