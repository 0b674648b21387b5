# reelforge images, one build target per kind of deployable (the Helm chart and deploy/docker-compose.yml
# set each container's arguments to the `reelforge` command):
#   gateway     the HTTP API; also runs `reelforge relay` and `reelforge exporter`
#   worker-cpu  the post-process and webhook workers (`reelforge worker postprocess|webhooks`)
#   worker-gpu  the GPU-stage worker: CUDA base image, CUDA build of torch (`reelforge worker gpu`)
#   triton      Triton Inference Server, for engines exported to a Triton model repository
# Build one with: docker build --target worker-gpu -t reelforge-worker-gpu:0.1.0 . (the default target,
# the last stage, is the gateway).
#
# No Docker engine runs on the development machines or in CI, so this file is linted there (hadolint,
# tests/unit/test_dockerfile.py) but no image has been built or run from it.

ARG PYTHON_VERSION=3.11.14
ARG TORCH_VERSION=2.13.0

FROM ghcr.io/astral-sh/uv:0.9.5 AS uv

# Python comes from uv's standalone builds, which need nothing from the OS but glibc: the Debian-based CPU
# images and the Ubuntu-based CUDA image run the very same interpreter.
FROM debian:12.12-slim AS python
ARG PYTHON_VERSION
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv

# torch is installed before the project, so the project's looser `torch>=2.4` is already met and kept.
FROM python AS build-cpu
ARG TORCH_VERSION
# The CPU build of torch: a few hundred MB instead of the CUDA build's several GB.
RUN uv pip install --python /opt/venv/bin/python --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY services /src/services
RUN uv pip install --python /opt/venv/bin/python /src

FROM python AS build-gpu
ARG TORCH_VERSION
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN uv pip install --python /opt/venv/bin/python --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY services /src/services
# triton-client: the worker can run its engine in process or call Triton (REELFORGE_ENGINE_BACKEND=triton).
RUN uv pip install --python /opt/venv/bin/python "/src[triton-client]"


# The CUDA base sets what the NVIDIA container runtime needs (NVIDIA_VISIBLE_DEVICES, driver capabilities);
# the CUDA libraries torch uses come with its wheel, so the small `base` flavour is enough.
FROM nvidia/cuda:13.0.0-base-ubuntu24.04 AS worker-gpu
RUN groupadd --system --gid 10001 reelforge \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/reelforge \
        --shell /usr/sbin/nologin reelforge \
    && install -d -o 10001 -g 10001 /run/reelforge
COPY --from=build-gpu /opt/python /opt/python
COPY --from=build-gpu /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REELFORGE_ENGINE_DEVICE=cuda \
    REELFORGE_HEARTBEAT_FILE=/run/reelforge/heartbeat \
    REELFORGE_READY_FILE=/run/reelforge/ready
WORKDIR /home/reelforge
USER 10001:10001
# Loading the engine takes a while; the ready file appears once it is warm.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s CMD ["reelforge", "worker-health", "--require-ready"]
ENTRYPOINT ["reelforge"]
CMD ["worker", "gpu", "--concurrency", "1"]


# NVIDIA's image as it is, run as its unprivileged user; the model repository is mounted or read from S3
# (--model-repository=s3://...). reelforge's repository (services/reelforge/engine/triton/repository,
# docs/triton.md) runs Python-backend models that import torch and reelforge: this stock image does not
# carry them, and an image that does (reelforge + CUDA torch for the image's Python) is not written yet.
FROM nvcr.io/nvidia/tritonserver:25.10-py3 AS triton
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--exit-on-error=true", "--strict-readiness=true"]


# The CPU deployables. ffmpeg is the static build inside the imageio-ffmpeg wheel (the one the tests ran),
# so no Debian package is installed at all.
FROM debian:12.12-slim AS runtime-cpu
# Numeric ids, so Kubernetes' runAsNonRoot can check the user without reading /etc/passwd. /run/reelforge
# holds the heartbeat and ready files the probes read (an emptyDir under Kubernetes).
RUN groupadd --system --gid 10001 reelforge \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/reelforge \
        --shell /usr/sbin/nologin reelforge \
    && install -d -o 10001 -g 10001 /run/reelforge
COPY --from=build-cpu /opt/python /opt/python
COPY --from=build-cpu /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REELFORGE_HEARTBEAT_FILE=/run/reelforge/heartbeat \
    REELFORGE_READY_FILE=/run/reelforge/ready
WORKDIR /home/reelforge
USER 10001:10001
ENTRYPOINT ["reelforge"]

FROM runtime-cpu AS worker-cpu
# Fails when the worker is alive but no longer consumes (reelforge/worker_health.py).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s CMD ["reelforge", "worker-health"]
CMD ["worker", "postprocess"]

FROM runtime-cpu AS gateway
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8000"]
