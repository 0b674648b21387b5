"""promtool unit tests of every alert (deploy/prometheus/tests/): for each, a case that fires and one that
does not. The cases (input series, evaluation time, expected label sets) are written here by hand; only
the expected annotations are copied from the rules, which keeps the YAML short to review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reelforge.observability.rules import queue_groups, slo_groups


@dataclass(frozen=True)
class Case:
    name: str
    alert: str
    eval_time: str
    series: dict[str, str]
    fires: list[dict[str, str]] = field(default_factory=list)  # label sets besides alertname; [] = silent


def _windows(slo: str, **extra: str) -> list[dict[str, str]]:
    """The four burn-rate rules of one SLO, all firing."""
    return [{"severity": severity, "slo": slo, "window": window, **extra}
            for severity, window in (("page", "1h"), ("page", "6h"), ("ticket", "1d"), ("ticket", "3d"))]


FINISHED = "reelforge_jobs_finished_total"
HTTP = 'reelforge_http_requests_total{route="/v1/videos",method="POST"'


def _histogram(metric: str, tier: str, le: str, good: str, count: str) -> dict[str, str]:
    return {f'{metric}_bucket{{tier="{tier}",le="{le}"}}': good, f'{metric}_count{{tier="{tier}"}}': count}


def _latency_cases(slo: str, metric: str, interactive_le: str, batch_le: str, alert: str) -> list[Case]:
    # Batch jobs all land between the interactive and the batch threshold: only interactive burns, which
    # shows each tier is held to its own threshold.
    batch = {**_histogram(metric, "batch", interactive_le, "0x100", "0+10x100"),
             **_histogram(metric, "batch", batch_le, "0+10x100", "0+10x100")}
    return [
        Case(f"{slo}: 30 % of interactive jobs too slow burns 30x", alert, "70m",
             {**_histogram(metric, "interactive", interactive_le, "0+7x100", "0+10x100"), **batch},
             _windows(slo, tier="interactive")),
        Case(f"{slo}: every job within its threshold", alert, "70m",
             {**_histogram(metric, "interactive", interactive_le, "0+10x100", "0+10x100"), **batch}),
    ]


CASES: list[Case] = [
    Case("job_success: 20 % failed burns 20x: every window", "ReelforgeJobSuccessBudgetBurn", "70m",
         {f'{FINISHED}{{status="completed"}}': "0+80x100", f'{FINISHED}{{status="failed"}}': "0+20x100",
          f'{FINISHED}{{status="cancelled"}}': "0+500x100"},
         _windows("job_success")),
    Case("job_success: 0.5 % failed is within budget (cancellations do not count)", "ReelforgeJobSuccessBudgetBurn",
         "70m", {f'{FINISHED}{{status="completed"}}': "0+199x100", f'{FINISHED}{{status="failed"}}': "0+1x100",
                 f'{FINISHED}{{status="cancelled"}}': "0+500x100"}),
    *_latency_cases("job_latency", "reelforge_job_duration_seconds", "60.0", "900.0", "ReelforgeJobLatencyBudgetBurn"),
    *_latency_cases("first_progress", "reelforge_job_first_progress_seconds", "10.0", "300.0",
                    "ReelforgeFirstProgressBudgetBurn"),
    Case("api_availability: 1 % 5xx burns 10x: below the 14.4x page, above the rest", "ReelforgeApiAvailabilityBudgetBurn",
         "70m", {f'{HTTP},status_class="2xx"}}': "0+990x100", f'{HTTP},status_class="5xx"}}': "0+10x100"},
         _windows("api_availability")[1:]),
    Case("api_availability: 0.05 % 5xx is within budget; /readyz answering 503 is not the API failing",
         "ReelforgeApiAvailabilityBudgetBurn", "70m",
         {f'{HTTP},status_class="2xx"}}': "0+1999x100", f'{HTTP},status_class="5xx"}}': "0+1x100",
          'reelforge_http_requests_total{route="/readyz",method="GET",status_class="5xx"}': "0+500x100"}),
    Case("an interactive message waiting 45 s (limit 30 s); batch may wait that long", "ReelforgeQueueOldestJobTooOld",
         "5m", {'reelforge_queue_oldest_age_seconds{queue="gpu-interactive"}': "45x10",
                'reelforge_queue_oldest_age_seconds{queue="gpu-batch"}': "45x10"},
         [{"severity": "page", "queue": "gpu-interactive"}]),
    Case("interactive messages 20 s old", "ReelforgeQueueOldestJobTooOld", "5m",
         {'reelforge_queue_oldest_age_seconds{queue="gpu-interactive"}': "20x10"}),
    Case("a backlog growing by 10 a minute", "ReelforgeQueueBacklogGrowing", "30m",
         {'reelforge_queue_depth{queue="gpu-batch"}': "0+10x60"}, [{"severity": "ticket", "queue": "gpu-batch"}]),
    Case("a large but steady backlog", "ReelforgeQueueBacklogGrowing", "30m",
         {'reelforge_queue_depth{queue="gpu-batch"}': "400x60"}),
    Case("waiting messages, no task started (a stalled worker, and a queue no worker ever took from)",
         "ReelforgeQueueNoConsumer", "20m",
         {'reelforge_queue_depth{queue="postprocess"}': "5x30", 'reelforge_tasks_started_total{queue="postprocess"}': "3x30",
          'reelforge_queue_depth{queue="webhooks"}': "5x30"},
         [{"severity": "page", "queue": "postprocess"}, {"severity": "page", "queue": "webhooks"}]),
    Case("waiting messages being taken", "ReelforgeQueueNoConsumer", "20m",
         {'reelforge_queue_depth{queue="postprocess"}': "5x30",
          'reelforge_tasks_started_total{queue="postprocess"}': "0+1x30"}),
    Case("a new dead-lettered job", "ReelforgeDeadLetterGrowing", "40m",
         {'reelforge_dead_letters{kind="jobs"}': "0x30 1x30"}, [{"severity": "ticket", "kind": "jobs"}]),
    Case("old dead letters only", "ReelforgeDeadLetterGrowing", "40m", {'reelforge_dead_letters{kind="jobs"}': "1x70"}),
    Case("a job waiting 90 s in the outbox", "ReelforgeOutboxStuck", "5m",
         {"reelforge_outbox_oldest_age_seconds": "90x10"}, [{"severity": "page"}]),
    Case("the relay keeps up", "ReelforgeOutboxStuck", "5m", {"reelforge_outbox_oldest_age_seconds": "1x10"}),
    Case("no exporter", "ReelforgeQueueMetricsAbsent", "6m", {"reelforge_outbox_depth": "0x10"}, [{"severity": "page"}]),
    Case("exporter scraped", "ReelforgeQueueMetricsAbsent", "6m", {'reelforge_queue_depth{queue="webhooks"}': "0x10"}),
    Case("40 % of webhook attempts fail", "ReelforgeWebhookFailureRate", "40m",
         {'reelforge_webhook_attempts_total{outcome="delivered"}': "0+6x60",
          'reelforge_webhook_attempts_total{outcome="server_error"}': "0+4x60"}, [{"severity": "ticket"}]),
    Case("10 % of webhook attempts fail", "ReelforgeWebhookFailureRate", "40m",
         {'reelforge_webhook_attempts_total{outcome="delivered"}': "0+9x60",
          'reelforge_webhook_attempts_total{outcome="network_error"}': "0+1x60"}),
]


# Recorded SLIs: exact values, including 0 (not an absent series) before any bad event has happened.
RECORDING_CASES: list[tuple[str, dict[str, str], str, list[dict[str, Any]]]] = [
    ("no failure yet records 0", {f'{FINISHED}{{status="completed"}}': "0+10x20"},
     'slo:sli_error:ratio_rate5m{slo="job_success"}', [{"labels": 'slo:sli_error:ratio_rate5m{slo="job_success"}',
                                                        "value": 0}]),
    ("no 5xx yet records 0", {f'{HTTP},status_class="2xx"}}': "0+10x20"},
     'slo:sli_error:ratio_rate5m{slo="api_availability"}',
     [{"labels": 'slo:sli_error:ratio_rate5m{slo="api_availability"}', "value": 0}]),
    ("a quarter of interactive jobs over 60 s", _histogram("reelforge_job_duration_seconds", "interactive", "60.0",
                                                           "0+3x20", "0+4x20"),
     'slo:sli_error:ratio_rate5m{slo="job_latency"}',
     [{"labels": 'slo:sli_error:ratio_rate5m{slo="job_latency",tier="interactive"}', "value": 0.25}]),
]


def _annotations() -> dict[str, dict[str, str]]:
    return {rule["alert"]: rule["annotations"] for group in [*slo_groups(), *queue_groups()]
            for rule in group["rules"] if "alert" in rule}


def test_file() -> dict[str, Any]:
    annotations = _annotations()
    return {
        "rule_files": ["../rules/slo.yml", "../rules/queues.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "name": case.name,
            "interval": "1m",
            "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
            "alert_rule_test": [{
                "eval_time": case.eval_time, "alertname": case.alert,
                "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations[case.alert]}
                               for labels in case.fires],
            }],
        } for case in CASES] + [{
            "name": name,
            "interval": "1m",
            "input_series": [{"series": series, "values": values} for series, values in inputs.items()],
            "promql_expr_test": [{"expr": expr, "eval_time": "15m", "exp_samples": samples}],
        } for name, inputs, expr, samples in RECORDING_CASES],
    }
