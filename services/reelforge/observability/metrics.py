"""Every Prometheus metric the gateway and the workers export (docs/metrics.md lists them with their
labels; tests/observability/test_metrics_docs.py keeps the two in step). The queue exporter's gauges
are in observability/queues.py.

Labels stay low-cardinality: route templates, methods, status classes, stages, phases, tiers (the job's
priority), models of the catalog and error codes. Never job ids, prompts or tenants.

Worker processes are Celery prefork children: with PROMETHEUS_MULTIPROC_DIR set (by `reelforge worker`
before prometheus_client is imported) every process writes its values to files there and the parent's
endpoint sums them (observability/multiproc.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prom_multiprocess

from reelforge.core.contracts import Status
from reelforge.core.jobs import JobRecord
from reelforge.observability.multiproc import MULTIPROC_ENV
from reelforge.observability.slo import E2E_LATENCY_S, FIRST_PROGRESS_S

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Phase and end-to-end durations: tens of milliseconds (a tiny model on CPU) to an hour (a long batch
# job), and every SLO threshold, so each SLI is an exact bucket ratio.
JOB_BUCKETS = tuple(sorted({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
                            300.0, 600.0, 900.0, 1800.0, 3600.0,
                            *E2E_LATENCY_S.values(), *FIRST_PROGRESS_S.values()}))
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WEBHOOK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# -- gateway
HTTP_REQUESTS = Counter("reelforge_http_requests_total", "HTTP requests answered by the gateway",
                        ["route", "method", "status_class"])
HTTP_DURATION = Histogram("reelforge_http_request_duration_seconds", "Gateway request latency, first byte in to "
                          "last byte out", ["route", "method", "status_class"], buckets=HTTP_BUCKETS)
JOBS_CREATED = Counter("reelforge_jobs_created_total", "Jobs accepted by the API (idempotent replays excluded)",
                       ["tier", "model"])

# -- job outcomes (counted by whichever process ends the job: a worker, or the gateway for a cancel)
JOBS_FINISHED = Counter("reelforge_jobs_finished_total", "Jobs that reached a terminal status",
                        ["status", "error_code", "tier", "model"])
JOB_DURATION = Histogram("reelforge_job_duration_seconds", "Completed jobs: creation to completion (end to end)",
                         ["tier", "model"], buckets=JOB_BUCKETS)
VIDEO_SECONDS = Counter("reelforge_video_seconds_total", "Seconds of video delivered by completed jobs",
                        ["tier", "model"])

# -- workers
PHASE_DURATION = Histogram("reelforge_job_phase_duration_seconds", "Seconds one job attempt spent in a phase "
                           "(queue_wait, encoding_prompt, denoising, decoding, staging, encoding, uploading)",
                           ["phase", "tier", "model"], buckets=JOB_BUCKETS)
DENOISE_STEP = Histogram("reelforge_denoise_step_duration_seconds", "Seconds per denoising step",
                         ["model"], buckets=STEP_BUCKETS)
FIRST_PROGRESS = Histogram("reelforge_job_first_progress_seconds", "Creation to the first completed denoising "
                           "step, on a job's first attempt", ["tier", "model"], buckets=JOB_BUCKETS)
GPU_SECONDS = Histogram("reelforge_gpu_attempt_seconds", "Engine seconds of one GPU attempt (its _sum is the "
                        "GPU time spent, failed attempts included)", ["tier", "model", "outcome"],
                        buckets=JOB_BUCKETS)
IN_FLIGHT = Gauge("reelforge_jobs_in_flight", "Tasks a worker is running now", ["stage"],
                  multiprocess_mode="livesum")
TASKS_STARTED = Counter("reelforge_tasks_started_total", "Tasks taken from a queue and started", ["queue"])
TASK_RETRIES = Counter("reelforge_task_retries_total", "Task attempts that ended in a retry", ["queue"])
QUALITY_CHECKS = Counter("reelforge_quality_checks_total", "Sampled clips scored against their prompt by the "
                         "RGB evaluator: accepted, rejected, or unscored (prompt outside its vocabulary)",
                         ["model", "result"])
ENGINE_LOADED = Gauge("reelforge_engine_loaded", "1 while a GPU worker process has its engine loaded and warm",
                      ["model"], multiprocess_mode="livesum")

# -- webhooks
WEBHOOK_ATTEMPTS = Counter("reelforge_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
WEBHOOK_ATTEMPT_DURATION = Histogram("reelforge_webhook_attempt_duration_seconds", "Seconds of one delivery "
                                     "attempt (the POST)", ["outcome"], buckets=HTTP_BUCKETS)
WEBHOOK_DELIVERIES = Counter("reelforge_webhook_deliveries_total", "Webhook events by final outcome",
                             ["outcome"])
WEBHOOK_LATENCY = Histogram("reelforge_webhook_delivery_latency_seconds", "Seconds from the job's end to the "
                            "successful delivery of its event, retries included", buckets=WEBHOOK_BUCKETS)

STAGE_BY_QUEUE = {"gpu-interactive": "gpu", "gpu-batch": "gpu", "postprocess": "postprocess",
                  "webhooks": "webhooks"}


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def job_created(job: JobRecord) -> None:
    JOBS_CREATED.labels(str(job.priority), job.model).inc()


def job_finished(job: JobRecord) -> None:
    tier, model = str(job.priority), job.model
    code = job.error.code if job.error is not None else ""
    JOBS_FINISHED.labels(str(job.status), code, tier, model).inc()
    if job.status == Status.completed:
        created = job.transitions.get(str(Status.queued))
        done = job.transitions.get(str(Status.completed))
        if created is not None and done is not None:
            JOB_DURATION.labels(tier, model).observe(max(0.0, (done - created) / 1000))
        VIDEO_SECONDS.labels(tier, model).inc(int(job.seconds))


def phases_observed(job: JobRecord, timings: dict[str, float]) -> None:
    for phase, seconds in timings.items():
        PHASE_DURATION.labels(phase, str(job.priority), job.model).observe(seconds)


# -- serving


def process_exited(pid: int) -> None:
    """Drop a finished worker child's live gauges (in flight, engine loaded)."""
    if os.environ.get(MULTIPROC_ENV):
        prom_multiprocess.mark_process_dead(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LiveProcessesCollector(prom_multiprocess.MultiProcessCollector):
    """prometheus-client's multiprocess collector that first drops the live gauges of processes that are
    gone: a child killed outright (OOM, a hard time limit) never runs its exit hook, and its "in flight"
    would otherwise count forever."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path)
        self.path = path

    def collect(self) -> Any:
        for file in Path(self.path).glob("gauge_live*_*.db"):
            pid = int(file.stem.rsplit("_", 1)[1])
            if not _alive(pid):
                prom_multiprocess.mark_process_dead(pid, self.path)
        return super().collect()


def registry(multiprocess_dir: str | None = None) -> CollectorRegistry:
    """What an endpoint serves: every live process's values in multiprocess mode, else this process's."""
    path = multiprocess_dir or os.environ.get(MULTIPROC_ENV)
    if not path:
        from prometheus_client import REGISTRY

        return REGISTRY
    collected = CollectorRegistry()
    LiveProcessesCollector(collected, path)
    return collected


class MetricsPortTaken(Exception):
    pass


def serve(port: int) -> None:
    """Serve this process's (or, in multiprocess mode, all its processes') metrics; 0 disables."""
    if port:
        serve_registry(registry(), port, "REELFORGE_METRICS_PORT")


def serve_registry(collected: CollectorRegistry, port: int, setting: str) -> None:
    """/metrics on all interfaces (scraped from other hosts), from a background thread."""
    try:
        start_http_server(port, addr="0.0.0.0", registry=collected)
    except OSError as exc:
        raise MetricsPortTaken(f"cannot serve metrics on port {port} ({exc.strerror}); choose another with "
                               f"{setting}, or 0 to disable") from None
