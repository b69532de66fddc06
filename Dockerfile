# syntax=docker/dockerfile:1.7
# mrdserve container images (see README, "Containers and Kubernetes").
#
#   docker build --target service -t mrdserve:gpu .                          # CUDA runtime, torch cu128, onnxruntime-gpu
#   docker build --target service --build-arg VARIANT=cpu -t mrdserve:cpu .  # no GPU: torch CPU wheel, onnxruntime
#   docker build --target trainer -t mrdserve-trainer:gpu .                  # + training deps, ENTRYPOINT mrdserve train
#
# Artifacts: mount a directory of exported artifacts at /models (MRDSERVE_ARTIFACTS); the bundled demo artifacts
# stay in front while MRDSERVE_WITH_BUNDLED=1. Scratch and the job spool live under /var/lib/mrdserve and /tmp,
# which must be writable volumes when the root filesystem is read-only (Kubernetes manifests in k8s/).
ARG VARIANT=gpu
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
ARG CPU_IMAGE=ubuntu:22.04

# ---------------------------------------------------------------------------------------------- bases per variant
FROM ${CUDA_IMAGE} AS base-gpu
ENV MRDSERVE_TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
    MRDSERVE_ONNXRUNTIME=onnxruntime-gpu==1.31.1 \
    MRDSERVE_EXTRAS=gpu

FROM ${CPU_IMAGE} AS base-cpu
ENV MRDSERVE_TORCH_INDEX=https://download.pytorch.org/whl/cpu \
    MRDSERVE_ONNXRUNTIME="" \
    MRDSERVE_EXTRAS=""

# ---------------------------------------------------------------------------------------------- Python 3.11
# hadolint ignore=DL3006
FROM base-${VARIANT} AS python
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10); the PPA tool is removed again in the same layer.
# Ubuntu package versions move with security updates, so they are not pinned (DL3008); Python packages are.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libgomp1 \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------- builder
FROM python AS builder
ARG TORCH_VERSION=2.13.0
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
# torch first, from the PyTorch index of the variant (cu128 or cpu), pinned; the constraints file pins the rest.
RUN pip install --no-cache-dir -c constraints.txt --index-url "${MRDSERVE_TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY models ./models
COPY service ./service
COPY gadgets ./gadgets
# The runtime only: no dev or train extras. On GPU, onnxruntime-gpu replaces the CPU onnxruntime (same module).
# Versions come from constraints.txt (-c), which hadolint cannot see (DL3013).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -c constraints.txt ".${MRDSERVE_EXTRAS:+[${MRDSERVE_EXTRAS}]}" \
 && if [ -n "${MRDSERVE_ONNXRUNTIME}" ]; then \
      pip uninstall -y onnxruntime \
      && pip install --no-cache-dir --no-deps --force-reinstall "${MRDSERVE_ONNXRUNTIME}"; \
    fi \
 && python -c "import mrdserve.service.api, mrdserve.service.engine.engine, onnxruntime, torch; print(torch.__version__)"

# ---------------------------------------------------------------------------------------------- service (runtime)
FROM python AS service
LABEL org.opencontainers.image.title="mrdserve" \
      org.opencontainers.image.description="Online MRI reconstruction service (REST 8000, MRD 9002)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 mrdserve \
 && useradd --system --uid 10001 --gid mrdserve --home-dir /var/lib/mrdserve --shell /usr/sbin/nologin mrdserve \
 && install -d -o mrdserve -g mrdserve -m 0750 /var/lib/mrdserve /var/lib/mrdserve/spool \
 && install -d -m 0755 /models
COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/mrdserve-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/var/lib/mrdserve \
    XDG_CACHE_HOME=/tmp/.cache \
    MRDSERVE_HOST=0.0.0.0 \
    MRDSERVE_PORT=8000 \
    MRDSERVE_MRD_PORT=9002 \
    MRDSERVE_ARTIFACTS=/models \
    MRDSERVE_WITH_BUNDLED=1 \
    MRDSERVE_DEVICE=auto \
    MRDSERVE_SPOOL_DIR=/var/lib/mrdserve/spool \
    MRDSERVE_LOG_LEVEL=INFO
WORKDIR /var/lib/mrdserve
USER 10001:10001
EXPOSE 8000 9002
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MRDSERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["mrdserve-entrypoint"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------- trainer
FROM builder AS trainer-builder
# tensorboard and the other training-only extras, pinned by constraints.txt (DL3013 cannot see it).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -c constraints.txt ".[train]"

FROM service AS trainer
COPY --from=trainer-builder /opt/venv /opt/venv
HEALTHCHECK NONE
ENTRYPOINT ["mrdserve", "train"]
CMD ["--help"]
