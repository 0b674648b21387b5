"""Task-level metrics every Celery worker exports, from Celery's signals (one place for all three roles)."""

from __future__ import annotations

import os
from typing import Any

from celery import Task
from celery.signals import task_postrun, task_prerun, task_retry, worker_process_shutdown

from reelforge.observability import metrics


def _queue(task: Task | None) -> str:
    info = (task.request.delivery_info or {}) if task is not None else {}
    return str(info.get("routing_key") or "unknown")


def _started(task: Task | None = None, **_: Any) -> None:
    queue = _queue(task)
    metrics.TASKS_STARTED.labels(queue).inc()
    metrics.IN_FLIGHT.labels(metrics.STAGE_BY_QUEUE.get(queue, "unknown")).inc()


def _finished(task: Task | None = None, **_: Any) -> None:
    metrics.IN_FLIGHT.labels(metrics.STAGE_BY_QUEUE.get(_queue(task), "unknown")).dec()


def _retried(request: Any = None, **_: Any) -> None:
    info = getattr(request, "delivery_info", None) or {}
    metrics.TASK_RETRIES.labels(str(info.get("routing_key") or "unknown")).inc()


def connect_task_metrics(stages: tuple[str, ...]) -> None:
    """Count started tasks, retries and tasks in flight; a child's live gauges go when it exits. The
    stages this worker serves start at 0 in flight, so the series exists before the first task."""
    for stage in stages:
        metrics.IN_FLIGHT.labels(stage)
    task_prerun.connect(_started, weak=False)
    task_postrun.connect(_finished, weak=False)
    task_retry.connect(_retried, weak=False)
    worker_process_shutdown.connect(lambda **_: metrics.process_exited(os.getpid()), weak=False)
