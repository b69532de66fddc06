# mrdserve: `make test` and `make demo` set everything up from nothing on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR := demo-output

.PHONY: test demo demo-artifacts lint typecheck bench gpu-wheels debian demo-debian clean hadolint docker

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	# guard Gadgetron's `python -m gadgetron` launcher of this environment (see gadgets/launcher_guard.py)
	$(PY) -m mrdserve.gadgets install-guard
	touch $@

# Debian packages: reference tools the tests compare against (ISMRMRD generator and recon, BART, the DICOM
# validator, a PACS, a real browser for the web page test) and curl for the demo's REST client. Installed only
# when missing.
TEST_DEBIAN_PACKAGES := ismrmrd-tools bart dicom3tools orthanc orthanc-dicomweb chromium chromium-driver
DEMO_DEBIAN_PACKAGES := curl
define install_debian
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

debian:
	$(call install_debian,$(TEST_DEBIAN_PACKAGES))

demo-debian:
	$(call install_debian,$(DEMO_DEBIAN_PACKAGES))

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# mypy over the packages that [tool.mypy] in pyproject.toml names, seen as the installed `mrdserve` namespace.
typecheck: $(STAMP)
	rm -rf .mypy-src && mkdir -p .mypy-src/mrdserve && touch .mypy-src/mrdserve/__init__.py
	for top in models service gadgets; do ln -s ../../$$top .mypy-src/mrdserve/$$top; done
	$(VENV)/bin/mypy

test: $(STAMP) debian lint typecheck
	$(PY) -m pytest

demo: $(STAMP) demo-debian
	mkdir -p $(DEMO_DIR)
	for trajectory in cartesian radial spiral; do \
	  $(VENV)/bin/mrdserve simulate $(DEMO_DIR)/$$trajectory.h5 --trajectory $$trajectory --coils 8 --acceleration 4 \
	      --matrix 96 --seed 2024 || exit 1; \
	  $(VENV)/bin/mrdserve recon $(DEMO_DIR)/$$trajectory.h5 -o $(DEMO_DIR)/$$trajectory --format png || exit 1; \
	  $(VENV)/bin/mrdserve recon $(DEMO_DIR)/$$trajectory.h5 -o $(DEMO_DIR)/$$trajectory --format png \
	      --artifact classical || exit 1; \
	done
	@echo "demo images in $(DEMO_DIR)/<trajectory>/: one from the fitting demo artifact, one from the classical baseline"
	@# The same files through the REST service and the MRD server of one `mrdserve serve` on free loopback ports:
	@# POST and unpack DICOM + PNG, then stream each file over MRD (per-slice latency), stop it.
	@port=$$($(PY) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	mrd_port=$$($(PY) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	$(VENV)/bin/mrdserve serve --host 127.0.0.1 --port $$port --mrd-port $$mrd_port --spool-dir $(DEMO_DIR)/spool \
	    --log-level WARNING & pid=$$!; trap 'kill $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 1 600); do curl -sf http://127.0.0.1:$$port/readyz >/dev/null && break; sleep 0.2; done; \
	curl -sf http://127.0.0.1:$$port/readyz >/dev/null || { echo "mrdserve serve did not become ready"; exit 1; }; \
	echo "the page to try it in a browser: http://127.0.0.1:$$port/ (while the demo runs; mrdserve serve keeps it up)"; \
	for trajectory in cartesian radial spiral; do \
	  for format in dicom png; do \
	    out=$(DEMO_DIR)/rest/$$trajectory-$$format; mkdir -p $$out; \
	    seconds=$$(curl -sf -D $$out.headers -o $$out.zip -w '%{time_total}' -F file=@$(DEMO_DIR)/$$trajectory.h5 \
	        "http://127.0.0.1:$$port/v1/reconstructions?format=$$format") || { echo "POST $$trajectory failed"; exit 1; }; \
	    slices=$$(grep -i '^x-mrdserve-slices' $$out.headers | tr -dc '0-9'); \
	    label=$$(grep -i '^x-mrdserve-labels' $$out.headers | cut -d' ' -f2 | tr -d '\r'); \
	    $(PY) -m zipfile -e $$out.zip $$out && rm -f $$out.zip $$out.headers; \
	    $(PY) -c "print(f'REST $$trajectory -> $$format: {1000 * $$seconds / $$slices:.1f} ms per slice ($$slices slice(s), $$label)')"; \
	  done; \
	done; \
	mkdir -p $(DEMO_DIR)/mrd; \
	for trajectory in cartesian radial spiral; do \
	  $(VENV)/bin/mrdserve stream $(DEMO_DIR)/$$trajectory.h5 -o $(DEMO_DIR)/mrd/$$trajectory.h5 --host 127.0.0.1 \
	      --port $$mrd_port > $(DEMO_DIR)/mrd/$$trajectory.log 2>&1 \
	      || { cat $(DEMO_DIR)/mrd/$$trajectory.log; echo "MRD stream of $$trajectory failed"; exit 1; }; \
	  grep -E 'after its last acquisition' $(DEMO_DIR)/mrd/$$trajectory.log | sed "s/^/MRD $$trajectory: /"; \
	done; \
	kill $$pid; wait $$pid 2>/dev/null; \
	echo "REST results (DICOM + PNG) in $(DEMO_DIR)/rest/, MRD stream results (ISMRMRD images) in $(DEMO_DIR)/mrd/"

# Retrain and re-export the bundled demo artifacts (CPU, synthetic data; see models/training/configs/demo_*.yaml).
# demo_xpdnet_base, demo_xpdnet_varied and demo_xpdnet are stages 1-3 of the XPDNet (trained, not exported);
# demo_xpdnet_dc fine-tunes stage 3 with the final data-consistency step. Export also runs the validation envelope
# (minutes per artifact).
DEMO_CONFIGS := demo_ncpdnet_radial demo_ncpdnet_spiral demo_xpdnet_base demo_xpdnet_varied demo_xpdnet \
	demo_xpdnet_dc
demo-artifacts: $(STAMP)
	for config in $(DEMO_CONFIGS); do \
	  $(VENV)/bin/mrdserve train models/training/configs/$$config.yaml --no-resume || exit 1; \
	  case $$config in demo_xpdnet_base|demo_xpdnet_varied|demo_xpdnet) continue;; esac; \
	  $(VENV)/bin/mrdserve export runs/$$(echo $$config | tr _ -)/latest.pt -o service/artifacts --overwrite || exit 1; \
	done

bench: $(STAMP)
	$(PY) bench/nufft.py

# Wheels for bench/gpu.sh on a GPU machine (Python 3.12, CUDA torch already there, no network): mrdserve and the
# dependencies that machine lacks. Carry bench/out/gpu-wheels with the working tree.
GPU_WHEEL_DEPS := ismrmrd==1.15.0 xsdata==26.10 torchkbnufft==1.5.2 finufft==2.5.1 ptwt==1.0.1 PyWavelets==1.9.0 \
	jsonschema jsonschema-specifications referencing rpds-py
gpu-wheels: $(STAMP)
	rm -rf bench/out/gpu-wheels && mkdir -p bench/out/gpu-wheels
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d bench/out/gpu-wheels $(GPU_WHEEL_DEPS)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w bench/out/gpu-wheels .
	rm -rf build

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache .mypy_cache .mypy-src *.egg-info

# Container image (needs a Docker engine) and its lint (hadolint from the dev extra; no engine needed).
hadolint: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile

docker:
	docker build --target service -t mrdserve:gpu .
	docker build --target service --build-arg VARIANT=cpu -t mrdserve:cpu .
	docker build --target trainer -t mrdserve-trainer:gpu .
