"""The Celery application shared by every worker and by the gateway (which only publishes).

The gateway publishes by task name, so it never imports torch or the workers' code.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from kombu.entity import Queue

from reelforge.core.contracts import Priority
from reelforge.core.jobs import now_ms
from reelforge.observability.tracing import inject_trace_context
from reelforge.settings import Settings, get_settings

QUEUE_GPU_INTERACTIVE = "gpu-interactive"
QUEUE_GPU_BATCH = "gpu-batch"
QUEUE_POSTPROCESS = "postprocess"
QUEUE_WEBHOOKS = "webhooks"
ALL_QUEUES = (QUEUE_GPU_INTERACTIVE, QUEUE_GPU_BATCH, QUEUE_POSTPROCESS, QUEUE_WEBHOOKS)

TASK_GENERATE = "reelforge.gpu.generate"
TASK_POSTPROCESS = "reelforge.postprocess.encode"
TASK_WEBHOOK = "reelforge.webhooks.deliver"

GPU_QUEUE_BY_PRIORITY = {Priority.interactive: QUEUE_GPU_INTERACTIVE, Priority.batch: QUEUE_GPU_BATCH}

# Unix ms of the publish (retries included), from which the queue exporter tells a waiting message's age.
PUBLISHED_MS_HEADER = "reelforge_published_ms"


@before_task_publish.connect(weak=False)
def _stamp_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every message carries its publish time and the publisher's trace context (`traceparent`)."""
    if headers is not None:
        headers[PUBLISHED_MS_HEADER] = now_ms()
        inject_trace_context(headers)


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("reelforge", broker=settings.celery_broker_url)
    app.conf.update(
        broker_transport="reelforge.broker:Transport",
        task_queues=[Queue(name) for name in ALL_QUEUES],
        task_default_queue=QUEUE_GPU_BATCH,
        task_routes={
            TASK_POSTPROCESS: {"queue": QUEUE_POSTPROCESS},
            TASK_WEBHOOK: {"queue": QUEUE_WEBHOOKS},
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # At-least-once: ack after the task ran, and put the message back if the worker process died.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.gpu_task_time_limit_s,
        task_soft_time_limit=settings.gpu_task_time_limit_s - 5,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # Look for messages past their visibility timeout every tenth of it (1-10 s) instead of kombu's
            # every 100 s, which would dwarf a short timeout: a worker that vanished with its message
            # (a lost node; a killed child is requeued at once) gets its job redelivered that much sooner.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1,
            # Poll queues in the order a worker lists them (-Q gpu-interactive,gpu-batch): interactive
            # work is always taken first; batch waits while interactive work is queued.
            "queue_order_strategy": "priority",
        },
        broker_connection_retry_on_startup=True,
        # Redis at maxmemory (noeviction, as deploy/ configures it) refuses writes with an error reply,
        # which kombu counts as a channel error: a worker acking a finished task then died with
        # "Unrecoverable error: OutOfMemoryError" and no later job got past its queue. Retried like a lost
        # connection instead, the consumer reconnects with backoff; the unacked message is redelivered.
        broker_channel_error_retry=True,
        worker_hijack_root_logger=False,
        # A GPU worker's child loads the engine in worker_process_init before it reports up; Celery's
        # 4 s default kills a child that takes longer, in a loop.
        worker_proc_alive_timeout=settings.engine_load_timeout_s,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


celery_app = create_celery()
