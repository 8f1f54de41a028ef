# The front door. `make demo` and `make test` work on a fresh machine with only this repository.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The versions the suite passed with (Python 3.11); CONSTRAINTS= installs the newest the lower bounds allow.
CONSTRAINTS ?= constraints.txt
export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE ?= 1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install browser demo test test-fast check-demo lint bench-data bench-train bench-infer bench-accuracy sweep clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[train,serve,app,test,dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the web page's test (Debian's package). Installed when missing and possible
# (root with apt-get); otherwise that test is skipped with a note.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the web page test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "note: could not install chromium; the web page test will be skipped"; \
	  else echo "note: no chromium here; the web page test will be skipped (apt-get install chromium)"; fi; }

# DEMO_ARGS: sigverify options for the demo's fit and test (the walk-through test shrinks the training with them).
demo: $(STAMP)
	$(BIN)/python -m sigverify.demo $(DEMO_ARGS)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not demo"

# make demo as README writes it, its figure checked against README's (about 6 minutes; .ci/run runs it after make test).
check-demo: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m demo

# The suite without its slowest end-to-end tests (the README walk-through, the serving-only install): minutes less.
test-fast: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not demo"

lint: $(STAMP)
	$(BIN)/ruff check sigverify tests benchmarks

# make bench-train [RUNS=3] [ARGS="--backbone tf_efficientnetv2_b0 ..."]: RUNS fresh processes, medians last.
RUNS ?= 3
bench-data bench-train bench-infer: bench-%: $(STAMP)
	$(BIN)/python -m benchmarks.repeat --runs $(RUNS) -- $(BIN)/python -m benchmarks.$* $(ARGS)

# make bench-accuracy [DATA=manifest.csv] [PRESET=configs/presets/cedar_cpu.yaml] [LOSS=triplet_hard] [FOLDS=5]
#   (a preset naming sweep.ensemble, e.g. configs/presets/cedar_cpu_ensemble.yaml, trains its losses: no LOSS)
#   [PROTOCOL=references] [ARGS="--screen" or sigverify options]: the k-fold protocol, JSON last.
PROTOCOL ?= references
bench-accuracy: $(STAMP)
	$(BIN)/python -m benchmarks.accuracy $(if $(DATA),--data $(DATA)) \
	  --preset $(if $(filter command line environment,$(origin PRESET)),$(PRESET),configs/presets/cedar_cpu.yaml) \
	  $(if $(LOSS),--loss $(LOSS)) --folds $(if $(filter 0,$(FOLDS)),5,$(FOLDS)) --protocol $(PROTOCOL) $(ARGS)

clean:
	rm -rf runs sweeps .pytest_cache

# make sweep [DATA=manifest.csv] [PRESET=configs/presets/cpu_tiny.yaml] [SEEDS="0 1 2"] [FOLDS=5] [OUT=sweeps/NAME]
DATA ?=
PRESET ?= configs/presets/cpu_tiny.yaml
SEEDS ?= 0
FOLDS ?= 0
OUT ?= sweeps/$(notdir $(basename $(PRESET)))
sweep: $(STAMP)
	$(BIN)/python -m sigverify.sweep $(if $(DATA),--data $(DATA)) --preset $(PRESET) --seeds $(SEEDS) --folds $(FOLDS) --out $(OUT) $(ARGS)
