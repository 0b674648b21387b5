"""deploy/grafana/dashboards/: what a Grafana needs to load them into any instance (their queries are
evaluated against a real Prometheus in tests/integration/test_observability.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_GLOBALS = {"__rate_interval", "__interval", "__range"}
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))


def test_the_three_dashboards_exist() -> None:
    assert [p.stem for p in DASHBOARDS] == ["debug", "executive", "oncall"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_use_the_chosen_prometheus_and_fit_the_grid(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"] == f"reelforge-{path.stem}" and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 5
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        used = set(re.findall(r"\$\{?(\w+)", " ".join(t["expr"] for t in panel["targets"])))
        assert used <= set(variables) | GRAFANA_GLOBALS, (panel["title"], used)


def test_panels_do_not_overlap() -> None:
    for path in DASHBOARDS:
        cells: set[tuple[int, int]] = set()
        for panel in json.loads(path.read_text())["panels"]:
            g = panel["gridPos"]
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{path.stem}: {panel['title']} overlaps another panel"
            cells |= mine
