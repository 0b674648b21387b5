"""Webhook dispatcher: signed (Standard Webhooks) delivery of terminal job events, with retries.

The webhook-id is derived from the job and event type, so a receiver can drop duplicates of an event
that was delivered twice (at-least-once). Every attempt is recorded on the job, is a span of the job's
trace and sends that span's context as the `traceparent` header. An event that used up its attempts
goes to the webhooks dead-letter list.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from celery import Task
from opentelemetry.trace import SpanKind
from standardwebhooks.webhooks import Webhook

from reelforge import __version__
from reelforge.celery_app import TASK_WEBHOOK, celery_app
from reelforge.core.contracts import WebhookEvent, WebhookMessage
from reelforge.core.jobs import JobRecord, now_ms
from reelforge.core.store import PREFIX
from reelforge.observability import metrics
from reelforge.observability.tracing import TRACEPARENT, consume_span, inject_trace_context, tracer
from reelforge.runtime import Runtime, get_runtime

log = structlog.get_logger("reelforge.webhooks")

USER_AGENT = f"reelforge-webhooks/{__version__}"
RESPONSE_EXCERPT_BYTES = 1024


def attempts_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:webhook_attempts"


def delivered_key(event_id: str) -> str:
    return f"{PREFIX}:webhook:delivered:{event_id}"


def build_event(job: JobRecord, msg: WebhookMessage) -> WebhookEvent:
    ended_ms = max(job.transitions.values()) if job.transitions else now_ms()
    timestamp = datetime.fromtimestamp(ended_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    return WebhookEvent(type=msg.type, timestamp=timestamp, data=job.to_video())


def sign(secret: str, event_id: str, payload: str, at: datetime) -> dict[str, str]:
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, payload),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def attempt_outcome(status_code: int | None) -> str:
    """The `outcome` label of an attempt: delivered, client_error, server_error, other_status, network_error."""
    if status_code is None:
        return "network_error"
    return {2: "delivered", 4: "client_error", 5: "server_error"}.get(status_code // 100, "other_status")


def _post(rt: Runtime, url: str, payload: str, headers: dict[str, str], record: dict[str, Any]) -> bool:
    """The POST of one attempt, as a client span whose context the receiver gets as `traceparent`."""
    started = time.perf_counter()
    with tracer.start_as_current_span("webhook POST", kind=SpanKind.CLIENT,
                                      attributes={"http.request.method": "POST"}) as span:
        inject_trace_context(headers)
        try:
            with httpx.Client(timeout=rt.settings.webhook_timeout_s, follow_redirects=False) as client:
                response = client.post(url, content=payload, headers=headers)
            record["status_code"] = response.status_code
            span.set_attribute("http.response.status_code", response.status_code)
            if not 200 <= response.status_code < 300:
                record["error"] = response.text[:RESPONSE_EXCERPT_BYTES]
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    record["duration_ms"] = round(seconds * 1000, 1)
    outcome = attempt_outcome(record.get("status_code"))
    metrics.WEBHOOK_ATTEMPTS.labels(outcome).inc()
    metrics.WEBHOOK_ATTEMPT_DURATION.labels(outcome).observe(seconds)
    return outcome == "delivered"


def deliver_once(rt: Runtime, msg: WebhookMessage, attempt: int) -> bool:
    """One delivery attempt. True when there is nothing left to do (delivered, or nothing to send)."""
    if rt.redis.exists(delivered_key(msg.event_id)):
        return True
    job = rt.store.get(msg.job_id)
    if job is None or not job.webhook_url:
        return True
    payload = build_event(job, msg).model_dump_json()
    headers = sign(rt.tenants.webhook_secret(job.tenant), msg.event_id, payload, datetime.now(UTC))
    record: dict[str, Any] = {"event_id": msg.event_id, "type": msg.type, "attempt": attempt, "at": now_ms()}
    ok = _post(rt, job.webhook_url, payload, headers, record)
    if ok:
        metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
        ended_ms = max(job.transitions.values()) if job.transitions else record["at"]
        metrics.WEBHOOK_LATENCY.observe(max(0.0, (now_ms() - ended_ms) / 1000))
    pipe = rt.redis.pipeline(transaction=False)
    pipe.rpush(attempts_key(msg.job_id), json.dumps(record))
    if ok:
        pipe.set(delivered_key(msg.event_id), "1", ex=rt.settings.asset_ttl_s)
    pipe.execute()
    log.info("webhook_attempt", **record)
    return ok


@celery_app.task(name=TASK_WEBHOOK, bind=True, max_retries=None)
def deliver(self: Task, message: dict[str, Any]) -> None:
    msg = WebhookMessage.model_validate(message)
    structlog.contextvars.bind_contextvars(job_id=msg.job_id, event_id=msg.event_id)
    rt = get_runtime()
    attempt = self.request.retries + 1
    try:
        with consume_span("webhooks.deliver", self.request.get(TRACEPARENT), msg.job_id):
            if deliver_once(rt, msg, attempt):
                return
            if attempt >= rt.settings.webhook_max_attempts:
                log.warning("webhook_gave_up", attempts=attempt)
                metrics.WEBHOOK_DELIVERIES.labels("gave_up").inc()
                rt.store.dead_letter("webhooks", {**msg.model_dump(), "attempts": attempt})
                return
            backoff = rt.settings.webhook_backoff_s
            raise self.retry(countdown=backoff[min(attempt - 1, len(backoff) - 1)])
    finally:
        structlog.contextvars.clear_contextvars()
