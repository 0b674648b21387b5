"""docs/metrics.md lists every metric the code defines, with its type and labels, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from reelforge.observability import metrics, queues

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(reelforge_\w+)` \| (counter|gauge|histogram) \|([^|]*)\|", re.M)
TYPES = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}


def documented() -> dict[str, tuple[str, set[str]]]:
    text = (ROOT / "docs/metrics.md").read_text()
    return {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in ROW.findall(text)}


def defined() -> dict[str, tuple[str, set[str]]]:
    found: dict[str, tuple[str, set[str]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if isinstance(value, Counter) else "")
            found[name] = (TYPES[type(value)], set(value._labelnames))
    source = Path(queues.__file__).read_text()
    for call in re.findall(r"GaugeMetricFamily\(.*?\)\n", source, re.S):
        name = re.match(r'GaugeMetricFamily\("(\w+)"', call)
        labels = re.search(r"labels=\[([^\]]*)\]", call)
        assert name is not None, call
        found[name[1]] = ("gauge", set(re.findall(r'"(\w+)"', labels[1])) if labels else set())
    return found


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    code, docs = defined(), documented()
    assert len(code) >= 24
    assert code.keys() == docs.keys(), {"undocumented": code.keys() - docs.keys(), "gone": docs.keys() - code.keys()}
    for name, (kind, labels) in code.items():
        assert docs[name] == (kind, labels), (name, docs[name], (kind, labels))


def test_no_label_can_carry_an_id_a_prompt_or_a_tenant() -> None:
    for name, (_, labels) in defined().items():
        assert not labels & {"job_id", "video_id", "prompt", "tenant", "task_id", "event_id", "url"}, name
