# Set-up and the two jobs of the README: `make demo` and `make test`.
# The venv lives in .venv; torch/torchvision are pinned here (the pair on this machine's disk)
# while setup.cfg keeps ranges, so GPU users can bring their own CUDA build (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
DEBIAN_PACKAGES := dataset-fashion-mnist postgresql chromium
PIP := $(BIN)/python -m pip --disable-pip-version-check
# the sampler alone (Optuna and NumPy, no torch) on the lowest Optuna setup.cfg allows
MIN_OPTUNA := 4.2.0
MIN_VENV := .venv-min-optuna

.PHONY: install system-deps data demo test test-quick benchmark clean-venv

$(BIN)/biotune-optuna: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(PIP) install $(TORCH_PIN)
	$(PIP) install -q -e ".[test,lite]"
	touch $@

install: $(BIN)/biotune-optuna

$(MIN_VENV)/bin/pytest: Makefile
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip --disable-pip-version-check install -q \
	  "optuna==$(MIN_OPTUNA)" numpy pytest hypothesis "psycopg[binary]"
	touch $@

# Debian packages: Fashion-MNIST (offline data), PostgreSQL (multi-worker tests), Chromium
# (dashboard screenshot). Installed only when missing; tests skip with a reason without them.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null \
	  || { $$sudo apt-get update -q >/dev/null && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; } \
	  || echo "warning: could not install$$missing; the tests that need them will skip"; \
	fi

# the emoji target, fetched once with npm into the data cache (its tests skip without it)
data: install
	@$(BIN)/python -m biotune_optuna.finetuning.emoji >/dev/null \
	  || echo "warning: the emoji set could not be fetched; the tests that need it will skip"

demo: install system-deps data
	$(BIN)/biotune-optuna demo

# the whole suite, then the sampler's (less Optuna's generic sampler tests, which Optuna
# 4.2 does not ship) against the lowest Optuna version setup.cfg admits
test: install system-deps data $(MIN_VENV)/bin/pytest
	$(BIN)/python -m pytest -q
	PYTHONPATH=. $(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/sampler \
	  --ignore tests/sampler/test_optuna_contract.py

# the quick lane, for every change (under 3 minutes): what trains no real model and starts
# no process or server; `make test` runs these and the slow ones
test-quick: install
	$(BIN)/python -m pytest -q -m "not slow"

# every section of benchmarks/RESULTS.md: the samplers on synthetic objectives, the search's
# cost, the transfer tasks, the baselines with tuned rates, three protocol variants, the
# noise-aware, multi-fidelity and surrogate-assisted BioTune, the ablations, the cost model,
# the fronts and the real backbone (about 50 hours on 2 CPU cores; run nothing else
# meanwhile; every long one resumes from benchmarks/out, the multi-session ones from the
# committed benchmarks/records)
benchmark: install system-deps
	$(BIN)/python -m benchmarks.sampler_synthetic --seeds 10
	$(BIN)/python -m benchmarks.sampler_parallel
	$(BIN)/python -m benchmarks.cli_startup
	$(BIN)/python -m benchmarks.demo_runs
	$(BIN)/python -m benchmarks.same_seed
	$(BIN)/python -m benchmarks.search_cost
	$(BIN)/python -m benchmarks.transfer
	$(BIN)/python -m benchmarks.tuned_baselines
	$(BIN)/python -m benchmarks.transfer --tasks mnist --batch-size 16
	$(BIN)/python -m benchmarks.transfer --tasks fashion --train-seeds 3
	$(BIN)/python -m benchmarks.transfer --tasks digits --trainable-penalty 0.1
	$(BIN)/python -m benchmarks.noise_aware --part synthetic --seeds 20
	$(BIN)/python -m benchmarks.noise_aware --part transfer
	$(BIN)/python -m benchmarks.multifidelity --part fidelity
	$(BIN)/python -m benchmarks.multifidelity --part transfer --methods mf,rescored,tpe,cmaes,sur \
	  --seeds 10
	$(BIN)/python -m benchmarks.multifidelity --part transfer --methods mf,tpe,cmaes,sur,sur-full \
	  --seeds 10 --section surrogate
	$(BIN)/python -m benchmarks.multifidelity --part protocol --methods mf --seeds 10
	$(BIN)/python -m benchmarks.multifidelity --part transfer --methods mf,mf2,tpe,cmaes \
	  --seeds 10 --section lowfidelity
	$(BIN)/python -m benchmarks.multifidelity --part protocol --tasks small --methods mf,mf2 \
	  --seeds 10 --section lowfidelity
	$(BIN)/python -m benchmarks.surrogate --seeds 20
	$(BIN)/python -m benchmarks.surrogate --part mnist --seeds 5
	$(BIN)/python -m benchmarks.ablations --seeds 10
	$(BIN)/python -m benchmarks.training_cost --plans 30
	$(BIN)/python -m benchmarks.multiobjective --synthetic --seeds 20 \
	  --methods biotune,biotune-lean,nsga2,tpe,random
	$(BIN)/python -m benchmarks.multiobjective --synthetic --seeds 20 \
	  --methods biotune,biotune-k4,biotune-lean-k4 --section surrogate
	$(BIN)/python -m benchmarks.multiobjective --synthetic --seeds 20 \
	  --methods biotune,biotune-mf --section multifidelity --max-trials 600
	$(BIN)/python -m benchmarks.real_backbone --targets emoji,fashion --seeds 10 \
	  --methods biotune,tpe,cmaes
	$(BIN)/python -m benchmarks.real_backbone --report
	$(BIN)/python -m benchmarks.search_cost --real lite0

clean-venv:
	rm -rf $(VENV)
