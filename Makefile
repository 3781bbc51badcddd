# Set-up and the two jobs of the README: `make demo` and `make test`.
# The venv lives in .venv; torch/torchvision are pinned here (the pair on this machine's disk)
# while setup.cfg keeps ranges, so GPU users can bring their own CUDA build (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
DEBIAN_PACKAGES := dataset-fashion-mnist postgresql chromium
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install system-deps demo test benchmark clean-venv

$(BIN)/biotune-optuna: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(PIP) install $(TORCH_PIN)
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(BIN)/biotune-optuna

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

demo: install system-deps
	$(BIN)/biotune-optuna demo

test: install system-deps
	$(BIN)/python -m pytest -q

# every section of benchmarks/RESULTS.md: the samplers on synthetic objectives, the search's
# cost, the transfer tasks, the baselines with tuned rates, three protocol variants and the
# noise-aware BioTune (about 5 hours on 2 CPU cores; run nothing else meanwhile)
benchmark: install system-deps
	$(BIN)/python -m benchmarks.sampler_synthetic --seeds 10
	$(BIN)/python -m benchmarks.sampler_parallel
	$(BIN)/python -m benchmarks.cli_startup
	$(BIN)/python -m benchmarks.demo_runs
	$(BIN)/python -m benchmarks.search_cost
	$(BIN)/python -m benchmarks.transfer
	$(BIN)/python -m benchmarks.tuned_baselines
	$(BIN)/python -m benchmarks.transfer --tasks mnist --batch-size 16
	$(BIN)/python -m benchmarks.transfer --tasks fashion --train-seeds 3
	$(BIN)/python -m benchmarks.transfer --tasks digits --trainable-penalty 0.1
	$(BIN)/python -m benchmarks.noise_aware --part synthetic --seeds 20
	$(BIN)/python -m benchmarks.noise_aware --part transfer

clean-venv:
	rm -rf $(VENV)
