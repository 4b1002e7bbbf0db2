# The two commands a newcomer needs: `make demo` and `make test`.
# Everything they need is installed here, into ./.venv (Python) and, if missing, redis-server.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEMO_SECONDS ?= 30

.PHONY: demo test lint typecheck unit bench clean redis-server

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[producer,test,demo]'
	touch $(STAMP)

# redis-server for the tests and the demo (the demo falls back to fakeredis without it).
redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

demo: $(STAMP)
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
