# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean sql

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,testserver]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m rtds_pipeline.run

# The DuckDB CLI (duckdb-cli, installed with the rest) on the published warehouse, read-only.
sql: $(STAMP)
	$(BIN)/duckdb -readonly $${RTDS_WAREHOUSE:-data/warehouse.duckdb}

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.publish
	$(BIN)/python -m bench.freshness
	$(BIN)/python -m bench.webhook
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) data
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
