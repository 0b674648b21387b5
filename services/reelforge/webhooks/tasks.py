"""Webhook dispatcher: signed (Standard Webhooks) delivery of terminal job events, one attempt per task.

The webhook-id is derived from the job and event type, so a receiver can drop duplicates of an event
that was delivered twice (at-least-once, and replays send the same id). Each attempt is claimed first
(core/deliveries.py), recorded in the tenant's delivery log, is a span of the job's trace and sends that
span's context as the `traceparent` header. A failed attempt schedules the next one on the Standard
Webhooks schedule (settings.webhook_retry_schedule_s, with jitter; a Retry-After on 429/503 honoured);
after the last the event is dead-lettered. A 410 Gone disables the endpoint for its tenant: no later
event is sent there until the tenant enables it again (docs/webhooks.md).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import structlog
from celery import Task
from opentelemetry.trace import SpanKind
from standardwebhooks.webhooks import Webhook

from reelforge import __version__
from reelforge.celery_app import TASK_WEBHOOK, celery_app
from reelforge.core.contracts import WebhookEvent, WebhookMessage
from reelforge.core.deliveries import DeliveryStatus
from reelforge.core.jobs import JobRecord, now_ms
from reelforge.core.webhook_targets import (
    TargetPolicy,
    UnresolvableHost,
    UnsafeWebhookURL,
    parse_target,
    resolve,
)
from reelforge.observability import metrics
from reelforge.observability.tracing import TRACEPARENT, consume_span, inject_trace_context, tracer
from reelforge.runtime import Runtime, get_runtime
from reelforge.settings import Settings
from reelforge.webhooks import http
from reelforge.webhooks.retry import RETRY_AFTER_STATUSES, next_delay_s, retry_after_s

log = structlog.get_logger("reelforge.webhooks")

USER_AGENT = f"reelforge-webhooks/{__version__}"
# What of a failed answer's body is read (and kept in the delivery log); the rest is never downloaded.
RESPONSE_EXCERPT_BYTES = 1024
GONE = 410
# Outcomes that end an event, the `outcome` of reelforge_webhook_deliveries_total.
FINAL_OUTCOME: dict[DeliveryStatus, str] = {"delivered": "delivered", "dead_lettered": "gave_up",
                                            "endpoint_disabled": "endpoint_disabled"}


def claim_lease_s(settings: Settings) -> float:
    """How long a claimed attempt may run before the relay publishes it again: well past the attempt's
    own limits (connect, send and read timeouts, then a capped read)."""
    return settings.webhook_timeout_s * 4 + 30


def build_event(job: JobRecord, msg: WebhookMessage) -> WebhookEvent:
    ended_ms = max(job.transitions.values()) if job.transitions else now_ms()
    timestamp = datetime.fromtimestamp(ended_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    return WebhookEvent(type=msg.type, timestamp=timestamp, data=job.to_video())


def sign(secrets: list[str], event_id: str, payload: str, at: datetime) -> dict[str, str]:
    """Standard Webhooks headers; one `v1,...` signature per secret, space-separated (during a secret
    rotation's overlap a receiver holding either secret can verify)."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(Webhook(secret).sign(event_id, at, payload) for secret in secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def attempt_outcome(status_code: int | None, refused: bool = False) -> str:
    """The `outcome` label of an attempt: delivered, redirect, client_error, server_error, other_status,
    network_error, or refused_target (the URL failed the SSRF check at delivery)."""
    if refused:
        return "refused_target"
    if status_code is None:
        return "network_error"
    return {2: "delivered", 3: "redirect", 4: "client_error", 5: "server_error"}.get(status_code // 100,
                                                                                   "other_status")


def _post(settings: Settings, url: str, payload: str, headers: dict[str, str],
          record: dict[str, Any]) -> http.Answer | None:
    """The POST of one attempt, as a client span whose context the receiver gets as `traceparent`.
    The URL is checked again first: its name may resolve elsewhere than when the job was created."""
    policy = TargetPolicy(allow_private=settings.webhook_allow_private)
    answer, refused = None, False
    started = time.perf_counter()
    with tracer.start_as_current_span("webhook POST", kind=SpanKind.CLIENT,
                                      attributes={"http.request.method": "POST"}) as span:
        inject_trace_context(headers)
        try:
            target = parse_target(url, policy)
            answer = http.post(url, resolve(target, policy), payload.encode(), headers, settings.webhook_timeout_s,
                               RESPONSE_EXCERPT_BYTES)
            record["status_code"] = answer.status
            span.set_attribute("http.response.status_code", answer.status)
            if answer.excerpt:
                record["error"] = answer.excerpt.decode("utf-8", "replace")
        except UnresolvableHost as exc:
            record["error"] = str(exc)
        except UnsafeWebhookURL as exc:
            record["error"] = f"refused: {exc}"
            refused = True
        except http.TRANSPORT_ERRORS as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:RESPONSE_EXCERPT_BYTES]
        except Exception as exc:  # a bug of ours: the attempt still counts, so the event still ends
            log.exception("webhook_attempt_crashed")
            record["error"] = f"internal error: {type(exc).__name__}"
    seconds = time.perf_counter() - started
    record["duration_ms"] = round(seconds * 1000, 1)
    record["outcome"] = attempt_outcome(record.get("status_code"), refused)
    metrics.WEBHOOK_ATTEMPTS.labels(record["outcome"]).inc()
    metrics.WEBHOOK_ATTEMPT_DURATION.labels(record["outcome"]).observe(seconds)
    return answer


def _what_next(settings: Settings, attempt: int, answer: http.Answer | None) -> tuple[DeliveryStatus, int | None]:
    """After a failed attempt: (pending, when the next is due in Unix ms), or how the event ends."""
    if answer is not None and answer.status == GONE:
        return "endpoint_disabled", None
    retry_after = None
    if answer is not None and answer.status in RETRY_AFTER_STATUSES:
        retry_after = retry_after_s(answer.headers.get("retry-after"), datetime.now(UTC))
    delay = next_delay_s(attempt, settings.webhook_retry_schedule_s, settings.webhook_retry_jitter, retry_after,
                         settings.webhook_retry_after_max_s)
    if delay is None:
        return "dead_lettered", None
    return "pending", now_ms() + int(delay * 1000)


def deliver_once(rt: Runtime, msg: WebhookMessage) -> None:
    """Run attempt msg.attempt of an event, unless it is stale (a duplicate message, an event that has
    ended), then record it and schedule what follows."""
    job = rt.store.get(msg.job_id)
    if job is None or not job.webhook_url:
        return
    url = job.webhook_url
    claimed = rt.deliveries.claim(msg.event_id, msg.attempt, claim_lease_s(rt.settings), {
        "event_id": msg.event_id, "job_id": job.id, "tenant": job.tenant, "type": msg.type, "url": url,
        "traceparent": job.traceparent or ""})
    if not claimed:
        log.info("webhook_attempt_stale", attempt=msg.attempt)
        return
    record: dict[str, Any] = {"event_id": msg.event_id, "job_id": job.id, "type": msg.type, "attempt": msg.attempt,
                              "at": now_ms()}
    if rt.deliveries.endpoint_disabled(job.tenant, url):
        record.update(outcome="endpoint_disabled", error="not sent: this endpoint answered 410 Gone earlier and "
                      "is disabled; enable it again (POST /v1/webhooks/endpoints/enable), then replay")
        _finish(rt, job, msg, record, "endpoint_disabled", None)
        return
    payload = build_event(job, msg).model_dump_json()
    headers = sign(rt.tenants.webhook_signing_secrets(job.tenant), msg.event_id, payload, datetime.now(UTC))
    answer = _post(rt.settings, url, payload, headers, record)
    status: DeliveryStatus
    if record["outcome"] == "delivered":
        status, next_at = "delivered", None
        ended_ms = max(job.transitions.values()) if job.transitions else record["at"]
        metrics.WEBHOOK_LATENCY.observe(max(0.0, (now_ms() - ended_ms) / 1000))
    else:
        status, next_at = _what_next(rt.settings, msg.attempt, answer)
    if status == "endpoint_disabled" and answer is not None:
        rt.deliveries.disable_endpoint(job.tenant, url, msg.event_id, answer.status)
    _finish(rt, job, msg, record, status, next_at)


def _finish(rt: Runtime, job: JobRecord, msg: WebhookMessage, record: dict[str, Any], status: DeliveryStatus,
            next_at: int | None) -> None:
    if next_at is not None:
        record["next_attempt_at"] = next_at // 1000
    rt.deliveries.finish(msg.event_id, record, status, next_at)
    if status in FINAL_OUTCOME:
        metrics.WEBHOOK_DELIVERIES.labels(FINAL_OUTCOME[status]).inc()
    log.info("webhook_attempt", tenant=job.tenant, delivery_status=status, **record)


@celery_app.task(name=TASK_WEBHOOK, bind=True)
def deliver(self: Task, message: dict[str, Any]) -> None:
    msg = WebhookMessage.model_validate(message)
    structlog.contextvars.bind_contextvars(job_id=msg.job_id, event_id=msg.event_id)
    try:
        with consume_span("webhooks.deliver", self.request.get(TRACEPARENT), msg.job_id):
            deliver_once(get_runtime(), msg)
    finally:
        structlog.contextvars.clear_contextvars()
