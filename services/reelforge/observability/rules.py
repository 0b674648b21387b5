"""Prometheus recording and alerting rules, built from the SLOs in slo.py (deploy/prometheus/rules/).

SLO burn alerts follow the Google SRE Workbook's multiwindow, multi-burn-rate scheme: page when the
error budget burns 14.4x over 1h and 5m, or 6x over 6h and 30m; open a ticket at 3x over 1d and 2h, or
1x over 3d and 6h. Each SLI is recorded as `slo:sli_error:ratio_rate<window>` with an `slo` label.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.utils import floatToGoString

from reelforge.celery_app import QUEUE_GPU_BATCH, QUEUE_GPU_INTERACTIVE, QUEUE_POSTPROCESS, QUEUE_WEBHOOKS
from reelforge.core.contracts import Priority
from reelforge.observability.slo import E2E_LATENCY_S, FIRST_PROGRESS_S, OBJECTIVES, Objective

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (severity, burn rate, long window, short window), from the SRE Workbook, chapter "Alerting on SLOs".
BURN_ALERTS = (
    ("page", 14.4, "1h", "5m"),
    ("page", 6.0, "6h", "30m"),
    ("ticket", 3.0, "1d", "2h"),
    ("ticket", 1.0, "3d", "6h"),
)
RUNBOOKS = "docs/runbooks"
# The oldest waiting message may be this old before on-call hears of it: half the tier's end-to-end
# objective for the GPU queues, so there is time to act before the SLO is missed.
OLDEST_AGE_LIMIT_S = {
    QUEUE_GPU_INTERACTIVE: E2E_LATENCY_S[Priority.interactive] / 2,
    QUEUE_GPU_BATCH: E2E_LATENCY_S[Priority.batch] / 2,
    QUEUE_POSTPROCESS: 120.0,
    QUEUE_WEBHOOKS: 300.0,
}
BACKLOG_MIN_DEPTH = 50
WEBHOOK_FAILURE_RATIO = 0.25
OUTBOX_AGE_LIMIT_S = 60
# API availability is about the API: probes and scrapes (a 503 from /readyz while Redis is away) do not count.
API_ROUTES = 'route!~"/healthz|/readyz|/metrics"'


def _per_tier_good(histogram: str, thresholds: dict[Priority, float], window: str) -> str:
    """Rate of observations within their tier's threshold: one `le` bucket per tier."""
    parts = [f'sum by (tier) (rate({histogram}_bucket{{tier="{tier}",le="{floatToGoString(limit)}"}}[{window}]))'
             for tier, limit in thresholds.items()]
    return "\n  or ".join(parts)


def sli_error_ratio(slo: str, window: str) -> str:
    """The share of bad events; 0, not absent, while there is traffic and no bad event has happened yet."""
    if slo == "job_success":
        return (f'(sum(rate(reelforge_jobs_finished_total{{status="failed"}}[{window}])) or vector(0))\n'
                f'/ sum(rate(reelforge_jobs_finished_total{{status=~"completed|failed"}}[{window}]))')
    if slo == "api_availability":
        return (f'(sum(rate(reelforge_http_requests_total{{{API_ROUTES},status_class="5xx"}}[{window}])) or vector(0))\n'
                f'/ sum(rate(reelforge_http_requests_total{{{API_ROUTES}}}[{window}]))')
    histogram, thresholds = {
        "job_latency": ("reelforge_job_duration_seconds", E2E_LATENCY_S),
        "first_progress": ("reelforge_job_first_progress_seconds", FIRST_PROGRESS_S),
    }[slo]
    return (f"1 - (\n  {_per_tier_good(histogram, thresholds, window)}\n)\n"
            f"/ sum by (tier) (rate({histogram}_count[{window}]))")


def alert_name(objective: Objective) -> str:
    return "Reelforge" + "".join(part.capitalize() for part in objective.name.split("_")) + "BudgetBurn"


def _annotations(alert: str, summary: str, description: str) -> dict[str, str]:
    return {"summary": summary, "description": description, "runbook_url": f"{RUNBOOKS}/{alert}.md"}


def slo_groups() -> list[dict[str, Any]]:
    recording = [
        {"record": f"slo:sli_error:ratio_rate{window}", "expr": sli_error_ratio(o.name, window),
         "labels": {"slo": o.name}}
        for o in OBJECTIVES for window in WINDOWS
    ]
    alerts = []
    for o in OBJECTIVES:
        name = alert_name(o)
        for severity, rate, long, short in BURN_ALERTS:
            threshold = f"({rate} * {o.error_budget:.6g})"
            alerts.append({
                "alert": name,
                "expr": (f'slo:sli_error:ratio_rate{long}{{slo="{o.name}"}} > {threshold}\n'
                         f'and slo:sli_error:ratio_rate{short}{{slo="{o.name}"}} > {threshold}'),
                "labels": {"severity": severity, "slo": o.name, "window": long},
                "annotations": _annotations(
                    name, f"SLO {o.name} is burning its error budget too fast (see the slo, tier and window labels)",
                    f"{o.description}; objective {o.target:.4g}."),
            })
    return [{"name": "reelforge-slo-recording", "interval": "30s", "rules": recording},
            {"name": "reelforge-slo-alerts", "rules": alerts}]


def _oldest_age_expr() -> str:
    return "\nor ".join(f'reelforge_queue_oldest_age_seconds{{queue="{q}"}} > {limit:g}'
                        for q, limit in OLDEST_AGE_LIMIT_S.items())


def queue_groups() -> list[dict[str, Any]]:
    def alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> dict[str, Any]:
        return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
                "annotations": _annotations(name, summary, description)}

    return [{"name": "reelforge-queues", "rules": [
        alert("ReelforgeQueueOldestJobTooOld", _oldest_age_expr(), "2m", "page",
              "The oldest waiting message of a queue is older than that queue's limit",
              "Work waits longer than this queue's limit; jobs will miss their latency objective."),
        alert("ReelforgeQueueBacklogGrowing",
              f"reelforge_queue_depth > {BACKLOG_MIN_DEPTH} and deriv(reelforge_queue_depth[15m]) > 0", "15m",
              "ticket", "A queue has kept growing for 15 minutes",
              "Messages arrive faster than the workers take them, for 15 minutes: add workers or find the slow stage."),
        alert("ReelforgeQueueNoConsumer",
              "max by (queue) (reelforge_queue_depth) > 0\n"
              "unless on (queue) sum by (queue) (rate(reelforge_tasks_started_total[10m])) > 0", "10m", "page",
              "A queue has waiting messages and no worker has taken one for 10 minutes",
              "No worker consumes this queue: workers down, stuck, or not listening to it."),
        alert("ReelforgeDeadLetterGrowing", "reelforge_dead_letters - reelforge_dead_letters offset 30m > 0", "0m",
              "ticket", "New dead letters in the last 30 minutes",
              "Jobs used up their GPU attempts, or webhook events their deliveries."),
        alert("ReelforgeOutboxStuck", f"reelforge_outbox_oldest_age_seconds > {OUTBOX_AGE_LIMIT_S}", "2m", "page",
              f"A created job has waited over {OUTBOX_AGE_LIMIT_S} s for the relay",
              "The outbox relay is not moving created jobs to the GPU queues."),
        alert("ReelforgeQueueMetricsAbsent", "absent(reelforge_queue_depth)", "5m", "page",
              "No queue metrics: the exporter is down or cannot be scraped",
              "Queue alerts and queue-based autoscaling are blind while this fires."),
        alert("ReelforgeWebhookFailureRate",
              'sum(rate(reelforge_webhook_attempts_total{outcome!="delivered"}[15m]))\n'
              f"/ sum(rate(reelforge_webhook_attempts_total[15m])) > {WEBHOOK_FAILURE_RATIO}", "15m", "ticket",
              f"Over {WEBHOOK_FAILURE_RATIO:.0%} of webhook attempts fail",
              "Receivers refuse or cannot be reached; events are retried, then dead-lettered."),
    ]}]


def alert_names() -> list[str]:
    names = [alert_name(o) for o in OBJECTIVES]
    names += [rule["alert"] for group in queue_groups() for rule in group["rules"]]
    return names
