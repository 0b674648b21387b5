"""Grafana dashboards (deploy/grafana/dashboards/): executive, on-call and debug.

Every panel reads the Prometheus data source chosen in the dashboard's `datasource` variable, so the
files import into any Grafana. Debug panels filter by the `model` and `tier` variables.
"""

from __future__ import annotations

from typing import Any

from reelforge.observability.rules import API_ROUTES
from reelforge.observability.slo import OBJECTIVES

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
MODEL_TIER = 'model=~"$model",tier=~"$tier"'


def _panel(title: str, exprs: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries",
           width: int = 12, description: str = "") -> dict[str, Any]:
    return {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(exprs)],
        "gridPos": {"w": width, "h": 4 if kind == "stat" else 8},
    }


def _variable(name: str, query: str) -> dict[str, Any]:
    return {"name": name, "type": "query", "datasource": DATASOURCE, "query": {"query": query, "refId": name},
            "definition": query, "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2,
            "current": {"text": "All", "value": "$__all"}}


def _dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
               variables: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):  # lay panels out left to right, top to bottom
        grid = panel["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        grid.update(x=x, y=y)
        x, row_height = x + grid["w"], max(row_height, grid["h"])
        panel["id"] = number
    datasource_variable = {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    return {
        "uid": uid, "title": title, "description": description, "tags": ["reelforge"], "editable": True,
        "schemaVersion": 39, "refresh": "30s", "timezone": "utc", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [datasource_variable, *variables]}, "annotations": {"list": []}, "panels": panels,
    }


def _acceptance(window: str, by: str = "") -> str:
    """Accepted share of the scored sample clips (unscored prompts left out)."""
    quality, total = "reelforge_quality_checks_total", f"sum{by}"
    return (f'{total} (increase({quality}{{result="accepted"}}[{window}])) / '
            f'{total} (increase({quality}{{result=~"accepted|rejected"}}[{window}]))')


def executive() -> dict[str, Any]:
    finished = "reelforge_jobs_finished_total"
    return _dashboard("reelforge-executive", "reelforge / executive", "Output, success and cost of the platform", [
        _panel("Job success rate (24h)", [(f'sum(increase({finished}{{status="completed"}}[24h])) / '
                                           f'sum(increase({finished}{{status=~"completed|failed"}}[24h]))', "success")],
               "percentunit", "stat", 6),
        _panel("Videos (24h)", [(f'sum(increase({finished}{{status="completed"}}[24h]))', "videos")], "short", "stat", 6),
        _panel("Video-seconds (24h)", [("sum(increase(reelforge_video_seconds_total[24h]))", "seconds")], "s", "stat", 6),
        _panel("GPU-seconds per video-second (24h)", [
            ("sum(increase(reelforge_gpu_attempt_seconds_sum[24h])) / sum(increase(reelforge_video_seconds_total[24h]))",
             "GPU s / video s")], "short", "stat", 6),
        _panel("Quality acceptance (24h, sampled)", [(_acceptance("24h"), "accepted")], "percentunit", "stat", 6,
               "Share of scored sample clips whose frames show what their prompt names (gpu_worker/quality.py)"),
        _panel("Videos per hour", [(f'sum by (tier) (increase({finished}{{status="completed"}}[1h]))', "{{tier}}")]),
        _panel("Video-seconds per hour", [("sum by (tier) (increase(reelforge_video_seconds_total[1h]))", "{{tier}}")], "s"),
        _panel("Job success rate", [(f'sum(rate({finished}{{status="completed"}}[1h])) / '
                                     f'sum(rate({finished}{{status=~"completed|failed"}}[1h]))', "success")], "percentunit"),
        _panel("GPU-seconds per video-second", [
            ("sum by (model) (rate(reelforge_gpu_attempt_seconds_sum[1h])) / "
             "sum by (model) (rate(reelforge_video_seconds_total[1h]))", "{{model}}")]),
        _panel("Quality acceptance by model (6h, sampled)", [
            (_acceptance("6h", " by (model)"), "{{model}}")], "percentunit"),
    ])


def oncall() -> dict[str, Any]:
    burn = [(f'slo:sli_error:ratio_rate1h{{slo="{o.name}"}} / {o.error_budget:.6g}', f"{o.name} {{{{tier}}}}")
            for o in OBJECTIVES]
    return _dashboard("reelforge-oncall", "reelforge / on-call", "Queues, workers, errors and SLO burn", [
        _panel("Queue depth", [("sum by (queue) (reelforge_queue_depth)", "{{queue}}")]),
        _panel("Oldest waiting message", [("max by (queue) (reelforge_queue_oldest_age_seconds)", "{{queue}}")], "s"),
        _panel("Outbox (created, not yet queued)", [("reelforge_outbox_depth", "depth")], width=8),
        _panel("Workers up", [('sum by (job) (up{job=~".*reelforge.*"})', "{{job}}"),
                              ("sum by (model) (reelforge_engine_loaded)", "engines warm {{model}}")], width=8),
        _panel("Jobs in flight", [("sum by (stage) (reelforge_jobs_in_flight)", "{{stage}}")], width=8),
        _panel("API 5xx ratio", [(f'sum(rate(reelforge_http_requests_total{{{API_ROUTES},status_class="5xx"}}[{RATE}]))'
                                  f" / sum(rate(reelforge_http_requests_total{{{API_ROUTES}}}[{RATE}]))", "5xx")],
               "percentunit", width=8),
        _panel("Failed jobs by error code", [('sum by (error_code) (rate(reelforge_jobs_finished_total{status="failed"}'
                                              f"[{RATE}]))", "{{error_code}}")], "reqps", width=8),
        _panel("Webhook attempts by outcome", [(f"sum by (outcome) (rate(reelforge_webhook_attempts_total[{RATE}]))",
                                                "{{outcome}}")], "reqps", width=8),
        _panel("SLO burn rate (1h; 1 = on budget, 14.4 pages)", burn, width=16),
        _panel("Dead letters", [("sum by (kind) (reelforge_dead_letters)", "{{kind}}")], width=8),
    ])


def debug() -> dict[str, Any]:
    def quantile(q: float, metric: str, by: str) -> str:
        return (f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{MODEL_TIER}}}[{RATE}])))")

    phase = "reelforge_job_phase_duration_seconds"
    return _dashboard("reelforge-debug", "reelforge / debug", "Per-stage latency by model and tier", [
        _panel("Mean seconds per phase", [(f"sum by (phase) (rate({phase}_sum{{{MODEL_TIER}}}[{RATE}])) / "
                                           f"sum by (phase) (rate({phase}_count{{{MODEL_TIER}}}[{RATE}]))", "{{phase}}")],
               "s", width=24),
        _panel("p95 per phase", [(quantile(0.95, phase, "phase"), "{{phase}}")], "s"),
        _panel("End-to-end p50 / p95 per tier", [(quantile(0.5, "reelforge_job_duration_seconds", "tier"), "p50 {{tier}}"),
                                                 (quantile(0.95, "reelforge_job_duration_seconds", "tier"), "p95 {{tier}}")], "s"),
        _panel("Time to first progress p95 per tier", [
            (quantile(0.95, "reelforge_job_first_progress_seconds", "tier"), "{{tier}}")], "s"),
        _panel("Denoise step p50 / p95 per model", [
            ('histogram_quantile(0.5, sum by (le, model) (rate(reelforge_denoise_step_duration_seconds_bucket'
             f'{{model=~"$model"}}[{RATE}])))', "p50 {{model}}"),
            ('histogram_quantile(0.95, sum by (le, model) (rate(reelforge_denoise_step_duration_seconds_bucket'
             f'{{model=~"$model"}}[{RATE}])))', "p95 {{model}}")], "s"),
        _panel("GPU seconds per attempt by outcome", [
            (f"sum by (outcome) (rate(reelforge_gpu_attempt_seconds_sum{{{MODEL_TIER}}}[{RATE}])) / "
             f"sum by (outcome) (rate(reelforge_gpu_attempt_seconds_count{{{MODEL_TIER}}}[{RATE}]))", "{{outcome}}")], "s"),
        _panel("Gateway p95 by route", [
            ("histogram_quantile(0.95, sum by (le, route) (rate(reelforge_http_request_duration_seconds_bucket"
             f"[{RATE}])))", "{{route}}")], "s"),
        _panel("Webhook delivery latency p95", [
            (f"histogram_quantile(0.95, sum by (le) (rate(reelforge_webhook_delivery_latency_seconds_bucket[{RATE}])))",
             "p95")], "s"),
        _panel("Task retries by queue", [(f"sum by (queue) (rate(reelforge_task_retries_total[{RATE}]))", "{{queue}}")],
               "reqps"),
    ], variables=(_variable("model", "label_values(reelforge_job_phase_duration_seconds_count, model)"),
                  _variable("tier", "label_values(reelforge_job_phase_duration_seconds_count, tier)")))


DASHBOARDS = {"executive": executive, "oncall": oncall, "debug": debug}
