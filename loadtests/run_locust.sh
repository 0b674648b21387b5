#!/usr/bin/env bash
# One command for the load test: start a local stack, run locust headless against it, check and report,
# stop the stack. Exit status 1 when a check fails (loadtests/locustfile.py lists them).
#
#   bash loadtests/run_locust.sh [USERS] [DURATION]        # defaults: 200 users, 10m
#
# Environment: RESULTS (JSON path; a .md table is written beside it), DRAIN_S (how long to wait at the end
# for accepted jobs to finish, default 900), PORT (gateway, default 8300), SPAWN_RATE (users/s, default 20),
# GPU_CONCURRENCY (GPU worker processes, default 1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
USERS="${1:-200}"
DURATION="${2:-10m}"
PORT="${PORT:-8300}"
DATA_DIR="$(mktemp -d /tmp/reelforge-load.XXXXXX)"
RESULTS="${RESULTS:-$ROOT/loadtests/results/locust-${USERS}u-${DURATION}.json}"

.venv/bin/reelforge up --detach --data-dir "$DATA_DIR" --port "$PORT" \
  --gpu-concurrency "${GPU_CONCURRENCY:-1}" >/dev/null
trap '.venv/bin/reelforge down --data-dir "$DATA_DIR" >/dev/null; rm -rf "$DATA_DIR"' EXIT
API_KEY="$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["api_key"])' "$DATA_DIR/stack.json")"

REELFORGE_LOAD_API_KEY="$API_KEY" REELFORGE_LOAD_RESULTS="$RESULTS" REELFORGE_LOAD_DRAIN_S="${DRAIN_S:-900}" \
  .venv/bin/locust -f loadtests/locustfile.py --headless --only-summary --host "http://127.0.0.1:$PORT" \
  --users "$USERS" --spawn-rate "${SPAWN_RATE:-20}" --run-time "$DURATION" --stop-timeout 10
