"""Webhook dispatcher: signed (Standard Webhooks) delivery of terminal job events, with retries.

The webhook-id is derived from the job and event type, so a receiver can drop duplicates of an event
that was delivered twice (at-least-once). Every attempt is recorded on the job.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from celery import Task
from standardwebhooks.webhooks import Webhook

from reelforge import __version__
from reelforge.celery_app import TASK_WEBHOOK, celery_app
from reelforge.core.contracts import WebhookEvent, WebhookMessage
from reelforge.core.jobs import JobRecord, now_ms
from reelforge.core.store import PREFIX
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


def deliver_once(rt: Runtime, msg: WebhookMessage, attempt: int) -> bool:
    """One delivery attempt. True when there is nothing left to do (delivered, or nothing to send)."""
    if rt.redis.exists(delivered_key(msg.event_id)):
        return True
    job = rt.store.get(msg.job_id)
    if job is None or not job.webhook_url:
        return True
    payload = build_event(job, msg).model_dump_json()
    headers = sign(rt.tenants.webhook_secret(job.tenant), msg.event_id, payload, datetime.now(UTC))
    started = time.perf_counter()
    record: dict[str, Any] = {"event_id": msg.event_id, "type": msg.type, "attempt": attempt, "at": now_ms()}
    try:
        with httpx.Client(timeout=rt.settings.webhook_timeout_s, follow_redirects=False) as client:
            response = client.post(job.webhook_url, content=payload, headers=headers)
        record["status_code"] = response.status_code
        ok = 200 <= response.status_code < 300
        if not ok:
            record["error"] = response.text[:RESPONSE_EXCERPT_BYTES]
    except httpx.HTTPError as exc:
        ok = False
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
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
        if deliver_once(rt, msg, attempt):
            return
        if attempt >= rt.settings.webhook_max_attempts:
            log.warning("webhook_gave_up", attempts=attempt)
            return
        backoff = rt.settings.webhook_backoff_s
        raise self.retry(countdown=backoff[min(attempt - 1, len(backoff) - 1)])
    finally:
        structlog.contextvars.clear_contextvars()
