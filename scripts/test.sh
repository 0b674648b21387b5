#!/usr/bin/env bash
# Command 2 of the README: install everything, then run the whole test suite (real Redis, SeaweedFS,
# Celery workers, ffmpeg and gateway processes are started by the tests themselves).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest "$@"
