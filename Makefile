# Two entry points: `make demo` trains the quickstart on the built-in synthetic
# domains end to end; `make test` runs the test suite. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# One pytest-xdist worker per core: the suite is CPU-bound TensorFlow. Work stealing
# moves queued tests to an idle worker; tests/conftest.py spreads the slow ones over the workers.
PYTEST_WORKERS ?= auto

.PHONY: demo test test-all install clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/usss-tf train pipelines/quickstart.yaml --run-dir runs/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

clean:
	rm -rf runs data
