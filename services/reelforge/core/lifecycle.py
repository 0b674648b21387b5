"""Hand-offs between stages: publishing queue messages and ending a job (which fires its webhook)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import structlog
from celery import Celery
from celery.exceptions import Reject
from kombu.exceptions import OperationalError
from redis import Redis
from redis.exceptions import RedisError

from reelforge.celery_app import (
    GPU_QUEUE_BY_PRIORITY,
    QUEUE_POSTPROCESS,
    QUEUE_WEBHOOKS,
    TASK_GENERATE,
    TASK_POSTPROCESS,
    TASK_WEBHOOK,
)
from reelforge.core.contracts import (
    EVENT_TYPE_BY_STATUS,
    TERMINAL_STATUSES,
    GenerateMessage,
    Phase,
    PostprocessMessage,
    Priority,
    Status,
    WebhookMessage,
)
from reelforge.core.jobs import JobRecord
from reelforge.core.store import PREFIX, JobStore, store_unavailable
from reelforge.observability import metrics
from reelforge.observability.tracing import publish_span

log = structlog.get_logger("reelforge.lifecycle")


class Publisher:
    """Publishes typed messages by task name; task ids are derived from the job id so duplicates are
    recognisable in logs and tools. Each publish is a span of the job's trace."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def generate(self, job_id: str, priority: Priority, traceparent: str | None = None) -> None:
        queue = GPU_QUEUE_BY_PRIORITY[priority]
        with publish_span(queue, traceparent):
            self.celery.send_task(
                TASK_GENERATE,
                args=[GenerateMessage(job_id=job_id).model_dump()],
                queue=queue,
                task_id=f"{job_id}.generate",
                argsrepr=job_id,  # Celery would otherwise saferepr() the args of every message it publishes
                kwargsrepr="",
            )

    def postprocess(self, message: PostprocessMessage) -> None:
        with publish_span(QUEUE_POSTPROCESS):
            self.celery.send_task(
                TASK_POSTPROCESS,
                args=[message.model_dump()],
                queue=QUEUE_POSTPROCESS,
                task_id=f"{message.job_id}.postprocess",
            )

    def webhook(self, job: JobRecord) -> None:
        status = Status(job.status)
        if status not in TERMINAL_STATUSES or not job.webhook_url:
            return
        event_type = EVENT_TYPE_BY_STATUS[status]
        self.webhook_attempt(WebhookMessage(job_id=job.id, event_id=f"msg_{job.id}_{status}", type=event_type),
                             job.traceparent)

    def webhook_attempt(self, message: WebhookMessage, traceparent: str | None) -> None:
        """One attempt: the first straight from end_job, the others from the retry schedule (the relay)."""
        with publish_span(QUEUE_WEBHOOKS, traceparent):
            self.celery.send_task(TASK_WEBHOOK, args=[message.model_dump()], queue=QUEUE_WEBHOOKS,
                                  task_id=f"{message.event_id}.{message.attempt}")


def end_job(
    store: JobStore,
    publisher: Publisher,
    job_id: str,
    status: Status,
    fields: Mapping[str, str] | None = None,
    *,
    from_phases: Iterable[Phase] = (),
) -> bool:
    """Move a job to a terminal status, count it and queue its webhook. False if another transition won."""
    if not store.transition(job_id, status, fields, from_phases=from_phases):
        return False
    job = store.get(job_id)
    if job is not None:
        metrics.job_finished(job)
        publisher.webhook(job)
    return True


def requeue_when_store_unavailable(exc: BaseException, redis: Redis | None = None, wait_s: float = 0.0) -> None:
    """In a task that failed on Redis (the job store, or the broker it publishes to) being down, restarting
    or full: that is no reason to acknowledge, and so drop, its message. Raises Celery's Reject with requeue,
    which puts the message back at the head of its queue. Putting it back is itself a write: a Redis at
    maxmemory (noeviction) refuses it, and the message was lost (fault-injection scenario 8). So with
    `redis` given, this first waits (up to wait_s) until Redis takes a write again. Returns for any other
    error."""
    if not (store_unavailable(exc) or isinstance(exc, OperationalError)):
        return
    log.warning("task_requeued", reason="redis unavailable", error=str(exc))
    if redis is not None:
        wait_until_writable(redis, wait_s)
    raise Reject(f"redis unavailable: {exc}", requeue=True) from exc


def wait_until_writable(redis: Redis, wait_s: float, poll_s: float = 0.5) -> bool:
    """True once Redis accepts a small write (a key that expires on its own), False after wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            redis.set(f"{PREFIX}:writable-probe", "1", ex=60)
            return True
        except RedisError:
            if time.monotonic() >= deadline:
                log.warning("redis_still_unwritable", waited_s=wait_s)
                return False
            time.sleep(poll_s)
