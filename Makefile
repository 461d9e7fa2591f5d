# lw — every target creates and uses the project-local virtual environment in .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip
TORCH   := torch==2.13.0
MARKET  := sample_market/market
STAMP   := $(VENV)/.installed

.PHONY: install demo test bench sample-market clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is installed first, pinned, so that nothing later pulls a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(PIP) install -q --disable-pip-version-check $(TORCH)
	$(PIP) install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: a user with 200 labelled hours at a station the market has never seen searches it.
demo: $(STAMP)
	$(BIN)/lw search --market $(MARKET) --data sample_market/user/wanshouxigong_200h.csv --target PM2.5 --top 5
	$(BIN)/lw search --market $(MARKET) --data sample_market/user/wanshouxigong_200h_unlabelled.csv --top 5

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --out benchmarks/results

## sample-market: rebuild sample_market/ deterministically from the shipped data subset.
sample-market: $(STAMP)
	$(BIN)/python scripts/build_sample_market.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
