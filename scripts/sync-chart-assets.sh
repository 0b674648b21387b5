#!/usr/bin/env bash
# Copies the Prometheus rules and Grafana dashboards of deploy/ into the Helm chart, which cannot read files
# outside its own directory: deploy/prometheus/rules/*.yml -> helm/reelforge/files/prometheus/rules/ and
# deploy/grafana/dashboards/*.json -> helm/reelforge/files/grafana/dashboards/. Copies whose source is gone
# are removed. tests/deploy/test_chart_assets.py fails while the two differ: run this after editing deploy/.
# Usage: scripts/sync-chart-assets.sh [REPO_ROOT]
set -euo pipefail
ROOT="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

sync() {  # sync SOURCE_DIR PATTERN TARGET_DIR
  local source="$ROOT/$1" pattern="$2" target="$ROOT/$3"
  mkdir -p "$target"
  find "$target" -maxdepth 1 -type f -name "$pattern" -delete
  [ -d "$source" ] || return 0
  find "$source" -maxdepth 1 -type f -name "$pattern" -exec cp {} "$target/" \;
}

sync deploy/prometheus/rules '*.yml' helm/reelforge/files/prometheus/rules
sync deploy/grafana/dashboards '*.json' helm/reelforge/files/grafana/dashboards
