# lw — every target creates and uses the project-local virtual environment in .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip
TORCH   := torch==2.13.0
MARKET  := sample_market/market
STAMP   := $(VENV)/.installed

.PHONY: install demo test test-fast fuzz bench bench-quality bench-hetero bench-scale bench-reference \
	sample-market clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is installed first, pinned, so that nothing later pulls a CUDA build; everything else
# at the exact versions of constraints.txt (the sample market is rebuilt with them; see the
# README, "Reproducing the sample market").
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q --disable-pip-version-check $(TORCH)
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

USERDIR := sample_market/user
DEMO    := .demo

## demo: a user at a station the market has never seen searches it with 200 labelled hours,
## reuses what she found on 1,000 new hours, and ranks the market from 20 hours via anchors.
demo: $(STAMP)
	@mkdir -p $(DEMO)
	$(BIN)/lw search --market $(MARKET) --data $(USERDIR)/wanshouxigong_200h.csv --target PM2.5 --top 5
	$(BIN)/lw search --market $(MARKET) --data $(USERDIR)/wanshouxigong_200h.csv --target PM2.5 --json > $(DEMO)/search.json
	$(BIN)/lw reuse --market $(MARKET) --from-search $(DEMO)/search.json --top 3 \
		--data $(USERDIR)/wanshouxigong_new_hours.csv --target PM2.5 -o $(DEMO)/top3.csv
	$(BIN)/lw reuse --market $(MARKET) --from-search $(DEMO)/search.json --top 2 --method with-user \
		--train $(USERDIR)/wanshouxigong_200h.csv --data $(USERDIR)/wanshouxigong_new_hours.csv \
		--target PM2.5 -o $(DEMO)/top2_user.csv
	$(BIN)/lw anchor-eval --market $(MARKET) --data $(USERDIR)/wanshouxigong_20h.csv --target PM2.5 -o $(DEMO)/anchor_report.json
	$(BIN)/lw search --market $(MARKET) --anchor-report $(DEMO)/anchor_report.json --top 5

## test: every test (what CI runs), on TEST_JOBS pytest-xdist workers. test-fast: the edit loop,
## in one process, without the whole-system tests (real lw processes, crashes, kills, storage
## faults, containment) and the slow ones.
TEST_JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not system and not slow"

## fuzz: tests/test_fuzz.py with fresh random examples (hypothesis profile "fuzz"): package
## bytes, rkme.json, learnware.toml, requirement specs and data files through the CLI; each
## must exit with a documented code (never 1), in one line, leaving the market unchanged.
## FUZZ_EXAMPLES per input: the default takes about 10 minutes on 2 cores. Then 50 submits and
## 50 forced refreshes killed at random times (tests/test_crash.py, about 8 minutes).
FUZZ_EXAMPLES ?= 350
fuzz: $(STAMP)
	LW_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py \
		--hypothesis-profile=fuzz --hypothesis-show-statistics -p no:cacheprovider
	LW_RANDOM_KILLS=50 $(BIN)/python -m pytest -q tests/test_crash.py -m slow -p no:cacheprovider

## bench: RKME generation (1e3..1e6 rows x 10, 50 features), search on islands of 1e3..1e6
## learnwares (exact, sketch, recall@10, whole lw search process), market open and memory
## -> benchmarks/results/performance.{md,json,png}. ~15 min on 2 cores; ~12 GiB of scratch disk.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --out benchmarks/results

## bench-quality: the seed's experiments (sec. 5) with leave-one-station-out users on the
## shipped market -> benchmarks/results/quality.md and PNG plots (about 12 min on 2 cores).
bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py --out benchmarks/results --jobs 2

## bench-hetero: the heterogeneous specification world (seed sec. 5, Figures 3 and 7) on real
## temporary markets built from the shipped data: a user served from two islands, a one-block
## user before and after islands merge, four hospitals leave-one-out, search time across
## islands -> benchmarks/results/hetero.{md,json} and two plots (about 7 min on 2 cores).
bench-hetero: $(STAMP)
	$(BIN)/python benchmarks/hetero.py --out benchmarks/results --jobs 2

## bench-scale: running at scale: a no-op cron refresh of 1,000,000 learnwares, one new
## learnware on an island of 100,000, 200 spec files of 50,000 rows in-process / --jobs 2 /
## Dask, search on S3 (local server) -> benchmarks/results/scale.{md,json} (about 15 min on 2
## cores; ~3 GiB scratch disk).
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py --out benchmarks/results

## bench-reference: make bench with the reference package (learnware 0.4.0.post1) run on the
## same inputs in the same run, from its own .venv-ref (torch pinned first); the report gives
## ratios. Optional; not part of make test (~25 min).
REF_VENV := .venv-ref
$(REF_VENV)/.installed:
	$(PY) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q $(TORCH)
	$(REF_VENV)/bin/python -m pip install -q numpy scipy scikit-learn pandas tqdm pyyaml psutil \
		joblib 'qpsolvers[clarabel]' langdetect trl peft lm_eval sqlalchemy rapidfuzz shortuuid docker fire
	$(REF_VENV)/bin/python -m pip install -q --no-deps learnware==0.4.0.post1 fast_pytorch_kmeans==0.2.0.1
	touch $@

bench-reference: $(STAMP) $(REF_VENV)/.installed
	$(BIN)/python benchmarks/bench.py --ref-python $(REF_VENV)/bin/python --out benchmarks/results

## sample-market: rebuild sample_market/ deterministically from the shipped data subset.
sample-market: $(STAMP)
	$(BIN)/python scripts/build_sample_market.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache build *.egg-info
