# deepaas developer commands. `make run` and `make test` are all a new
# machine needs: each creates the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 5000

.PHONY: install run test lint type docs bench bench-batching vendor-ui clean

$(STAMP): pyproject.toml plugins-example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[tests,lint,docs]" -e ./plugins-example
	touch $(STAMP)

install: $(STAMP)

## Serve the bundled example plugins on http://127.0.0.1:$(PORT)
run: $(STAMP)
	$(BIN)/deepaas-run --listen-ip 127.0.0.1 --listen-port $(PORT)

## Run the test suite
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

type: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

## Predict overhead against a bare aiohttp handler (needs wrk)
bench: $(STAMP)
	$(BIN)/python benchmarks/predict_overhead.py

## Batching benefit on a torch MLP (installs torch==2.13.0 if missing; needs wrk)
bench-batching: $(STAMP)
	$(BIN)/python benchmarks/batching.py

## Re-fetch the dashboard's charting library (uPlot, pinned) from npm; needs npm
vendor-ui:
	scripts/vendor-uplot.sh

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .mypy_cache .ruff_cache
