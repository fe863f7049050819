# The two commands a newcomer types: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint golden clean docs install

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/digest demo --dir demo-output

test: $(STAMP) tests/node_modules/.installed
	$(BIN)/pytest -n 2 -q $(PYTEST_ARGS)

tests/node_modules/.installed: tests/package.json
	cd tests && npm install --no-audit --no-fund --silent
	touch $@

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check digest tests bench

golden: $(STAMP)
	DIGEST_UPDATE_GOLDEN=1 $(BIN)/pytest -q tests -k golden

clean:
	rm -rf $(VENV) demo-output tests/node_modules .pytest_cache

docs: $(STAMP)
	$(BIN)/python docs/update_settings.py
