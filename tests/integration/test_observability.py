"""Metrics, traces and logs of a real stack, checked by a real Prometheus scraping it with the rules of
deploy/prometheus/ loaded, and by the spans every process exported over OTLP."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reelforge.celery_app import ALL_QUEUES
from reelforge.devstack.processes import ManagedProcess, free_port
from reelforge.devstack.stack import Stack
from tests.integration.conftest import (
    GPU_IN_FLIGHT,
    OtlpReceiver,
    WebhookReceiver,
    scraped,
    wait_terminal,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PHASES = ("queue_wait", "encoding_prompt", "denoising", "decoding", "staging", "encoding", "uploading")
# Grafana's variables, as a dashboard would expand them with "All" selected.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model": ".*", "$tier": ".*"}


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.query(expr)
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"no series for {expr} after {timeout} s")


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))],
        "scrape_configs": [{"job_name": f"reelforge-{name}", "static_configs": [{"targets": [target]}]}
                           for name, target in stack.info["metrics"].items()],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = ManagedProcess.spawn("prometheus", [
        binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}"], work)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    process.wait_ready(ready, "ready answer")
    yield Prometheus(url)
    process.stop()


def _video(api: httpx.Client, receiver: WebhookReceiver, headers: dict[str, str] | None = None,
           **params: Any) -> dict[str, Any]:
    body = {"prompt": "a red circle moving left on a black background", "size": "64x64", "seconds": "2", "fps": 8, "num_steps": 2,
            "webhook_url": f"{receiver.url}/hooks", **params}
    created = api.post("/v1/videos", json=body, headers=headers or {})
    assert created.status_code == 200, created.text
    video: dict[str, Any] = created.json()
    return video


def test_one_trace_per_job_from_request_to_webhook(
    api: httpx.Client, stack: Stack, receiver: WebhookReceiver, otlp: OtlpReceiver
) -> None:
    parent = f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01"
    video = _video(api, receiver, {"traceparent": parent}, priority="interactive")
    assert video["trace_id"] == CLIENT_TRACE_ID, "the caller's trace is continued and returned"
    assert wait_terminal(api, video["id"])["trace_id"] == CLIENT_TRACE_ID
    delivery = receiver.wait_for(video["id"])[0]
    sent = delivery["headers"]["traceparent"]
    assert re.fullmatch(rf"00-{CLIENT_TRACE_ID}-[0-9a-f]{{16}}-01", sent), sent

    expected = {
        ("reelforge-gateway", "POST /v1/videos"), ("reelforge-relay", "publish gpu-interactive"),
        ("reelforge-worker-gpu", "gpu.generate"), ("reelforge-worker-gpu", "encoding_prompt"),
        ("reelforge-worker-gpu", "denoising"), ("reelforge-worker-gpu", "decoding"),
        ("reelforge-worker-gpu", "staging"), ("reelforge-worker-gpu", "publish postprocess"),
        ("reelforge-worker-postprocess", "postprocess.encode"), ("reelforge-worker-postprocess", "encoding"),
        ("reelforge-worker-postprocess", "uploading"), ("reelforge-worker-postprocess", "publish webhooks"),
        ("reelforge-worker-webhooks", "webhooks.deliver"), ("reelforge-worker-webhooks", "webhook POST"),
    }
    deadline = time.monotonic() + 30
    while not expected <= {(s["service"], s["name"]) for s in otlp.trace(CLIENT_TRACE_ID)}:
        assert time.monotonic() < deadline, sorted({(s["service"], s["name"]) for s in otlp.trace(CLIENT_TRACE_ID)})
        time.sleep(0.2)
    spans = otlp.trace(CLIENT_TRACE_ID)
    ids = {s["span_id"] for s in spans}
    # one tree: every span hangs off another span of the trace, except the request's (the caller's child)
    for span in spans:
        assert span["parent_id"] in ids or (span["name"] == "POST /v1/videos" and span["parent_id"] == "00f067aa0ba902b7"), span
    webhook_post = next(s for s in spans if s["name"] == "webhook POST")
    assert sent.split("-")[2] == webhook_post["span_id"], "the webhook's traceparent is its attempt's span"

    logs = Path(stack.info["logs"])
    for role in ("gpu", "postprocess", "webhooks"):
        lines = [json.loads(line) for line in (logs / f"{role}.log").read_text().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("job_id") == video["id"]]
        assert mine and all(line["trace_id"] == CLIENT_TRACE_ID for line in mine), (role, mine[:3])


def test_a_cancelled_job_keeps_its_trace_and_a_new_job_gets_one(
    api: httpx.Client, receiver: WebhookReceiver, stack: Stack
) -> None:
    # a malformed traceparent is ignored (a new trace), never an error
    video = _video(api, receiver, {"traceparent": "00-zz-not-a-trace"}, priority="batch", num_steps=50,
                   size="128x128", seconds="4")
    assert re.fullmatch(r"[0-9a-f]{32}", video["trace_id"]) and video["trace_id"] != "0" * 32
    wait_until(api, video["id"], lambda v: v["status"] == "in_progress")
    assert scraped(stack, "gpu", GPU_IN_FLIGHT) == 1, "the running job is in flight in the GPU worker's child"
    assert api.post(f"/v1/videos/{video['id']}/cancel").json()["status"] == "cancelled"
    deadline = time.monotonic() + 30  # the worker stops at its next step
    while scraped(stack, "gpu", GPU_IN_FLIGHT) != 0:
        assert time.monotonic() < deadline, "the cancelled job still counts as in flight"
        time.sleep(0.2)
    delivery = receiver.wait_for(video["id"])[0]
    assert json.loads(delivery["body"])["type"] == "video.cancelled"
    # published by the gateway while answering the cancel request, yet in the job's trace
    assert delivery["headers"]["traceparent"].split("-")[1] == video["trace_id"]


def _expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def _grafana_expanded(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unexpanded variable in {expr}"
    return expr


def test_prometheus_scrapes_every_key_series_and_every_rule_and_dashboard_evaluates(
    api: httpx.Client, receiver: WebhookReceiver, prometheus: Prometheus
) -> None:
    done = [_video(api, receiver, priority=tier) for tier in ("interactive", "batch")]
    for video in done:
        assert wait_terminal(api, video["id"])["status"] == "completed"
        receiver.wait_for(video["id"])
    assert api.post("/v1/videos", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert api.get("/v1/no-such-route").status_code == 404
    assert api.request("PROPFIND", "/v1/videos").status_code == 405  # a method outside the label set

    for queue in ALL_QUEUES:
        prometheus.wait_for(f'reelforge_queue_depth{{queue="{queue}"}}')
        prometheus.wait_for(f'reelforge_queue_oldest_age_seconds{{queue="{queue}"}}')
    for stage in ("gpu", "postprocess", "webhooks"):
        prometheus.wait_for(f'reelforge_jobs_in_flight{{stage="{stage}"}}')
    for phase in PHASES:
        prometheus.wait_for(f'reelforge_job_phase_duration_seconds_count{{phase="{phase}"}}')
    for tier in ("interactive", "batch"):
        prometheus.wait_for(f'reelforge_job_duration_seconds_bucket{{tier="{tier}",le="60.0"}} > 0')
        prometheus.wait_for(f'reelforge_job_first_progress_seconds_count{{tier="{tier}"}} > 0')
        prometheus.wait_for(f'reelforge_jobs_finished_total{{status="completed",tier="{tier}",error_code=""}} > 0')
    for expr in (
        'reelforge_http_requests_total{route="/v1/videos",method="POST",status_class="2xx"}',
        'reelforge_http_requests_total{route="/v1/videos",method="POST",status_class="4xx"}',
        'reelforge_http_requests_total{route="unmatched",method="GET",status_class="4xx"}',
        'reelforge_http_requests_total{route="/v1/videos",method="OTHER",status_class="4xx"}',
        'reelforge_http_requests_total{route="/v1/videos/{video_id}",method="GET",status_class="2xx"}',
        'reelforge_engine_loaded{model="reelforge-mini"} == 1',
        "reelforge_denoise_step_duration_seconds_count > 0", 'reelforge_gpu_attempt_seconds_count{outcome="completed"}',
        "reelforge_video_seconds_total >= 2", 'reelforge_webhook_attempts_total{outcome="delivered"}',
        'reelforge_webhook_deliveries_total{outcome="delivered"}', "reelforge_webhook_delivery_latency_seconds_count > 0",
        'reelforge_tasks_started_total{queue="postprocess"}', 'reelforge_dead_letters{kind="jobs"}',
        "reelforge_outbox_depth", 'reelforge_jobs_created_total{tier="batch"}',
        'reelforge_quality_checks_total{model="reelforge-mini",result=~"accepted|rejected"}',
        'slo:sli_error:ratio_rate5m{slo="job_success"}', 'slo:sli_error:ratio_rate5m{slo="job_latency",tier="interactive"}',
    ):
        prometheus.wait_for(expr)

    rule_exprs = [e for p in sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
                  for e in _expressions(yaml.safe_load(p.read_text()))]
    dashboard_exprs = [_grafana_expanded(e) for p in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
                       for e in _expressions(json.loads(p.read_text()))]
    assert len(rule_exprs) > 30 and len(dashboard_exprs) > 20
    for expr in rule_exprs + dashboard_exprs:
        prometheus.query(expr)  # asserts Prometheus answered without error
    assert len(prometheus.query("sum by (queue) (reelforge_queue_depth)")) == len(ALL_QUEUES)

    deadline = time.monotonic() + 60  # the SLO recording group runs every 30 s
    while True:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if all(rule.get("lastEvaluation", "").startswith("20") for rule in rules) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {group["file"] for group in groups} == {str(p) for p in (ROOT / "deploy/prometheus/rules").glob("*.yml")}
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
