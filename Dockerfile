# One production image for every reelforge deployable: the gateway, the GPU-stage worker, the
# post-process worker and the webhook dispatcher run the same image with different arguments to the
# `reelforge` command (CMD below defaults to the gateway; the Helm chart sets `args` per deployment).
#
# No Docker engine runs on the development machines or in CI, so this image is linted there
# (hadolint, tests/unit/test_dockerfile.py) but has not been built or run.

# Bookworm, the Debian release of the development machines: ffmpeg is then the version the tests ran with.
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The engine's torch build. Installed before the project, so the project's looser `torch>=2.4` is already
# met and pip keeps this build. On Linux x86_64 PyPI serves CUDA builds, which the GPU-stage worker needs;
# the CPU-only deployables carry it too because they share the image.
ARG TORCH_SPEC="torch==2.13.0"
# The version is pinned in TORCH_SPEC, which hadolint cannot see through.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "${TORCH_SPEC}"

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir .


FROM python:3.11-slim-bookworm

# Not pinned to a Debian version: a stable point release replaces the old package in the archive, which
# would break the build; the base tag fixes the Debian release, so ffmpeg's major version cannot move.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# Numeric ids, so Kubernetes' runAsNonRoot can check the user without reading /etc/passwd.
RUN groupadd --system --gid 10001 reelforge \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/reelforge \
        --shell /usr/sbin/nologin reelforge

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /home/reelforge
USER 10001:10001

# The gateway's HTTP port; workers open none. Liveness and readiness are Kubernetes probes, not a
# HEALTHCHECK, which Kubernetes ignores.
EXPOSE 8000
ENTRYPOINT ["reelforge"]
CMD ["gateway"]
