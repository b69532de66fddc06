# mrdserve: `make test` and `make demo` set everything up from nothing on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := ismrmrd-tools bart dicom3tools
DEMO_DIR := demo-output

.PHONY: test demo demo-artifacts lint bench debian clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# Reference tools the tests compare against (ISMRMRD generator and recon, BART).
debian:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) debian lint
	$(PY) -m pytest

demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	for trajectory in cartesian radial spiral; do \
	  $(VENV)/bin/mrdserve simulate $(DEMO_DIR)/$$trajectory.h5 --trajectory $$trajectory --coils 8 --acceleration 4 \
	      --matrix 96 --seed 2024 || exit 1; \
	  $(VENV)/bin/mrdserve recon $(DEMO_DIR)/$$trajectory.h5 -o $(DEMO_DIR)/$$trajectory --format png || exit 1; \
	  $(VENV)/bin/mrdserve recon $(DEMO_DIR)/$$trajectory.h5 -o $(DEMO_DIR)/$$trajectory --format png \
	      --artifact classical || exit 1; \
	done
	@echo "demo images in $(DEMO_DIR)/<trajectory>/: one from the fitting demo artifact, one from the classical baseline"

# Retrain and re-export the bundled demo artifacts (CPU, synthetic data; see models/training/configs/demo_*.yaml).
DEMO_CONFIGS := demo_ncpdnet_radial demo_ncpdnet_spiral demo_xpdnet
demo-artifacts: $(STAMP)
	for config in $(DEMO_CONFIGS); do \
	  $(VENV)/bin/mrdserve train models/training/configs/$$config.yaml --no-resume || exit 1; \
	  $(VENV)/bin/mrdserve export runs/$$(echo $$config | tr _ -)/latest.pt -o service/artifacts --overwrite || exit 1; \
	done

bench: $(STAMP)
	$(PY) bench/nufft.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache *.egg-info
