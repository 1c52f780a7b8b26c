# Two commands do all their own setup on a fresh machine with Python 3.11+:
#   make demo   -- the deployment demo on the embedded SQLite default
#   make test   -- the whole test suite (server-backed tests skip with a reason when no server)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench soak clean diagrams

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sql,postgres,redis]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stepkernel demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs typing_tests
	$(MAKE) --no-print-directory typecheck
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs typing_tests

typecheck: $(STAMP)
	$(BIN)/mypy
	MYPYPATH=src:tests/unit $(BIN)/mypy --strict tests/unit
	MYPYPATH=src:tests/property $(BIN)/mypy --strict tests/property
	MYPYPATH=src:tests/integration $(BIN)/mypy --strict tests/integration
	$(BIN)/mypy --strict typing_tests benchmarks

soak: $(STAMP)
	STEPKERNEL_PROFILE=soak STEPKERNEL_SIM_SEEDS=100000 $(BIN)/pytest -q -p no:logging tests/property

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --write docs/benchmarks.md

diagrams: $(STAMP)
	$(BIN)/python docs/make_diagrams.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
