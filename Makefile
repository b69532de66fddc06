# mrdserve: `make test` and `make demo` set everything up from nothing on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := ismrmrd-tools bart
DEMO_DIR := demo-output

.PHONY: test demo lint bench debian clean

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
	$(VENV)/bin/mrdserve simulate $(DEMO_DIR)/cartesian.h5 --trajectory cartesian --coils 8 --acceleration 4 --matrix 192
	$(VENV)/bin/mrdserve recon $(DEMO_DIR)/cartesian.h5 -o $(DEMO_DIR) --format png
	@echo "demo images written under $(DEMO_DIR)/"

bench: $(STAMP)
	$(PY) bench/nufft.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache *.egg-info
