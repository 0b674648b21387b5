"""The chart's PrometheusRule and Grafana dashboards are rendered from copies of deploy/'s files (Helm reads
nothing outside the chart): the copies must equal the originals, and the templates must carry them whole."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from tests.deploy.chart import CHART, ROOT, of_kind, render

ASSETS = (("deploy/prometheus/rules", "files/prometheus/rules", "*.yml"),
          ("deploy/grafana/dashboards", "files/grafana/dashboards", "*.json"))
SYNC = ROOT / "scripts" / "sync-chart-assets.sh"
RULES = {"groups": [{"name": "reelforge-test", "rules": [
    {"record": "reelforge:gpu_backlog", "expr": 'sum(reelforge_queue_depth{queue=~"gpu-.*"})'},
    {"alert": "ReelforgeBacklog", "expr": "reelforge:gpu_backlog > 10", "for": "5m",
     "labels": {"severity": "page"}, "annotations": {"summary": "GPU backlog {{ $value }}"}}]}]}
DASHBOARD = {"title": "reelforge test", "uid": "rf-test", "panels": [{"type": "timeseries", "title": "backlog"}]}


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.glob(pattern)}


@pytest.mark.parametrize(("source", "copy", "pattern"), ASSETS)
def test_chart_copies_equal_the_deploy_files(source: str, copy: str, pattern: str) -> None:
    originals, copies = _files(ROOT / source, pattern), _files(CHART / copy, pattern)
    assert copies.keys() == originals.keys(), f"run scripts/sync-chart-assets.sh: {copy} differs from {source}"
    stale = [name for name in originals if copies[name] != originals[name]]
    assert not stale, f"run scripts/sync-chart-assets.sh: {stale} differ between {source} and {copy}"


def test_sync_script_copies_new_files_and_removes_stale_ones(tmp_path: Path) -> None:
    for source, copy, _ in ASSETS:
        (tmp_path / source).mkdir(parents=True)
        (tmp_path / "helm/reelforge" / copy).mkdir(parents=True)
    (tmp_path / "deploy/prometheus/rules/reelforge.yml").write_text(yaml.safe_dump(RULES))
    (tmp_path / "deploy/grafana/dashboards/overview.json").write_text(json.dumps(DASHBOARD))
    (tmp_path / "helm/reelforge/files/prometheus/rules/removed.yml").write_text("groups: []\n")
    subprocess.run(["bash", str(SYNC), str(tmp_path)], check=True, timeout=30)
    for source, copy, pattern in ASSETS:
        assert _files(tmp_path / "helm/reelforge" / copy, pattern) == _files(tmp_path / source, pattern)


@pytest.fixture()
def chart_with_assets(tmp_path: Path) -> Path:
    """A copy of the chart whose only assets are the test's own rule file and dashboard."""
    chart = tmp_path / "reelforge"
    shutil.copytree(CHART, chart)
    for _, copy, pattern in ASSETS:
        for path in (chart / copy).glob(pattern):
            path.unlink()
    (chart / "files/prometheus/rules/reelforge.yml").write_text(yaml.safe_dump(RULES))
    (chart / "files/grafana/dashboards/overview.json").write_text(json.dumps(DASHBOARD, indent=2))
    return chart


def test_prometheus_rule_carries_every_group_of_the_rule_files(chart_with_assets: Path) -> None:
    (rule,) = of_kind(render({}, chart_with_assets), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == RULES["groups"]


def test_the_chart_carries_every_rule_group_and_dashboard_of_deploy() -> None:
    manifests = render({})
    (rule,) = of_kind(manifests, "PrometheusRule")
    files = sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
    assert files, "deploy/prometheus/rules holds no rule files"
    expected = [group for path in files for group in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected
    data = {name: json.loads(text) for m in of_kind(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]
            for name, text in m["data"].items()}
    dashboards = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert dashboards and data == {path.name: json.loads(path.read_text()) for path in dashboards}


def test_dashboards_become_configmaps_for_the_grafana_sidecar(chart_with_assets: Path) -> None:
    (dashboard,) = [m for m in of_kind(render({}, chart_with_assets), "ConfigMap") if "dashboard" in m["metadata"]["name"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["overview.json"]) == DASHBOARD


def test_monitoring_objects_can_be_turned_off(chart_with_assets: Path) -> None:
    manifests = render({"metrics": {"prometheusRule": {"enabled": False}, "grafanaDashboards": {"enabled": False},
                                    "serviceMonitor": {"enabled": False}}}, chart_with_assets)
    assert not of_kind(manifests, "PrometheusRule") and not of_kind(manifests, "ServiceMonitor")
    assert not [m for m in of_kind(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]]


def test_a_rule_file_that_is_not_yaml_fails_the_render(chart_with_assets: Path) -> None:
    (chart_with_assets / "files/prometheus/rules/broken.yml").write_text("groups: [unclosed\n")
    with pytest.raises(helm.HelmError, match="broken.yml is not valid YAML"):
        render({}, chart_with_assets)
