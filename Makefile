# One entry point. `make demo` and `make test` work on a fresh clone with nothing installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: demo test bench smoke lint install clean mutate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,cluster]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --printshellcmds
	@echo ""
	@echo "Summary table: $(CURDIR)/results/summary/tables.md"
	@echo "Tidy metrics:  $(CURDIR)/results/summary/metrics.csv   Plots: $(CURDIR)/results/summary/plots/"

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks

# Every preset end to end at its real image size on the CPU (1-2 iterations per stage, few images):
# per preset and stage wall time and peak RSS in results/smoke/smoke.md. `make smoke PRESETS=coco_jsis,vcp_imp`.
PRESETS ?=

smoke: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.smoke --cores $(CORES) $(if $(PRESETS),--presets $(PRESETS))

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

# Mutation testing of the pure core (outside CI; a full run took about 50 min on 2 shared cores).
# `make mutate MODULES=fusion,paste` runs a subset (fusion, metrics, imp, paste); ARGS passes more options
# to mutation/run.py (e.g. ARGS=--diffs, ARGS=--keep). Scratch copies and verdicts: results/mutation/.
MUTMUT_VERSION := 3.8.1
MODULES ?= fusion,metrics,imp,paste
ARGS ?=

mutate: $(STAMP)
	$(BIN)/python -c "import mutmut, sys; sys.exit(mutmut.__version__ != '$(MUTMUT_VERSION)')" 2>/dev/null \
		|| $(BIN)/pip install --quiet 'mutmut==$(MUTMUT_VERSION)'
	PATH="$(CURDIR)/$(BIN):$$PATH" nice -n 19 $(BIN)/python mutation/run.py --modules $(MODULES) $(ARGS)

clean:
	rm -rf results .snakemake
