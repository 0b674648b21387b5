#!/usr/bin/env bash
# Command 1 of the README: install everything, start the local stack, generate one video from an
# example prompt with a progress bar, and print where the MP4 is. The stack keeps running afterwards.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec .venv/bin/reelforge demo "$@"
