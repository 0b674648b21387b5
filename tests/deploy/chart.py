"""Renders helm/reelforge with Helm's own Go engine (helm-python-sdk; no helm binary, no cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "reelforge"
RELEASE = "rf"
NAMESPACE = "video"

Manifest = dict[str, Any]


def render(values: dict[str, Any], chart: Path = CHART) -> list[Manifest]:
    """Every object the chart renders for values (NOTES.txt left out)."""
    rendered = helm.Chart.load(chart).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [doc for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def notes(values: dict[str, Any]) -> str:
    rendered = helm.Chart.load(CHART).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, suffix: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == f"{RELEASE}-reelforge-{suffix}"]
    assert len(found) == 1, f"expected one {kind} {suffix}, found {[m['metadata']['name'] for m in found]}"
    return found[0]


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] in ("Deployment", "StatefulSet"))


def containers(workload: Manifest, *, init: bool = True) -> list[Manifest]:
    spec = workload["spec"]["template"]["spec"]
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {item["name"]: item for item in container.get("env", [])}
