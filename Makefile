# uem — the two commands a user needs: `make demo` and `make test`.
# Each creates .venv if missing, installs the local CPU torch FIRST (pinned: an unpinned torch
# pulls gigabytes of CUDA wheels), then the project with its extras, then runs.
# Re-running is quick: the install step is skipped while pyproject.toml is unchanged.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.uem-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

# hnswlib compiles from source. By default it is built with -march=native: the venv is built on the
# machine that runs it, and AVX-512/AVX2 distance kernels are what make HNSW fast. Building a venv
# that will be copied to other CPUs? Run `HNSWLIB_NO_NATIVE=1 make setup` for a portable build.

DATA ?= data/emoji3
DATA2 ?= data/phosphor4

.PHONY: setup test test-all demo data floor serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[train,data,eval,dev,milvus,serve]'
	@touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

data: setup
	$(BIN)/uemctl data emoji --out $(DATA)
	$(BIN)/uemctl data icons --out $(DATA2)

# photo3: real photographs vs Fluent Emoji; downloads pinned packages with apt-get and npm
data-photos: setup
	$(BIN)/uemctl data photos --out data/photo3

demo: setup
	$(BIN)/uemctl demo

# The HTTP service and web page over the demo's bundle (run `make demo` first): http://127.0.0.1:8000/
BUNDLE ?= demo/model.uem
PORT ?= 8000
serve: setup
	@test -f $(BUNDLE)/manifest.json || { echo "make serve: no bundle at $(BUNDLE); run 'make demo' first (or make serve BUNDLE=path)" >&2; exit 2; }
	$(BIN)/uemctl serve $(BUNDLE) --port $(PORT)

floor: setup
	$(BIN)/python benchmarks/floor.py --data $(DATA)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
