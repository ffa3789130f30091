# Every target creates or reuses .venv; nothing is installed outside it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: install demo serve test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stethoscope demo

# Prefect server on 127.0.0.1:4200, work pool, deployments of prefect.yaml, a worker; Ctrl-C stops all.
serve: $(STAMP)
	$(BIN)/stethoscope serve

# import-linter (grimp) and mypy need the namespace as one directory: a tree of links to the
# folders, rebuilt each time. Contracts and settings: pyproject.toml; docs/architecture.md §2.
LINT_TREE := build/lint

lint: $(STAMP)
	$(BIN)/ruff check stethoscope flows tasks model schemas tests bench
	rm -rf $(LINT_TREE) && mkdir -p $(LINT_TREE)
	cp -rs $(CURDIR)/stethoscope $(LINT_TREE)/
	for d in flows tasks model schemas; do ln -s $(CURDIR)/$$d $(LINT_TREE)/stethoscope/$$d; done
	cd $(LINT_TREE) && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports --config $(CURDIR)/pyproject.toml
	cd $(LINT_TREE) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p stethoscope

test: lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration"

bench: $(STAMP)
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
