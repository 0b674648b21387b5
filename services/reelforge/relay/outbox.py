"""Transactional-outbox relay, and the clock of webhook retries.

The gateway writes a job and its outbox entry in one Redis script and answers; this loop moves entries
to the Celery GPU queues. An entry is first moved to an in-flight list (BLMOVE), published, then
removed, so a relay killed mid-batch leaves its entries in flight and the next start puts them back:
at-least-once, which the GPU task absorbs (idempotent by job id). Keeping the broker publish (about
300 µs of CPU in kombu) out of the request path is what lets one gateway process take thousands of
creates per second.

The same loop publishes webhook retries when they fall due (core/deliveries.py says why they wait in a
Redis sorted set rather than as Celery countdowns).
"""

from __future__ import annotations

import threading
from pathlib import Path

import structlog
from redis import Redis

from reelforge.core.contracts import Priority
from reelforge.core.deliveries import DeliveryStore
from reelforge.core.lifecycle import Publisher
from reelforge.core.store import OUTBOX_INFLIGHT_KEY, OUTBOX_KEY, parse_outbox_entry
from reelforge.worker_health import Heartbeat

log = structlog.get_logger("reelforge.relay")

BATCH = 200
POLL_TIMEOUT_S = 1


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def recover_inflight(redis: Redis) -> int:
    """Put back entries a previous relay took but may not have published."""
    moved = 0
    while redis.lmove(OUTBOX_INFLIGHT_KEY, OUTBOX_KEY, "RIGHT", "RIGHT") is not None:
        moved += 1
    return moved


def take_batch(redis: Redis, limit: int = BATCH, timeout_s: int = POLL_TIMEOUT_S) -> list[bytes]:
    first = redis.blmove(OUTBOX_KEY, OUTBOX_INFLIGHT_KEY, timeout_s, "RIGHT", "LEFT")
    if first is None:
        return []
    batch = [_as_bytes(first)]
    while len(batch) < limit:
        entry = redis.lmove(OUTBOX_KEY, OUTBOX_INFLIGHT_KEY, "RIGHT", "LEFT")
        if entry is None:
            break
        batch.append(_as_bytes(entry))
    return batch


def relay_batch(redis: Redis, publisher: Publisher, batch: list[bytes]) -> None:
    for entry in batch:
        priority, job_id, traceparent = parse_outbox_entry(entry.decode())
        publisher.generate(job_id, Priority(priority), traceparent)
    pipe = redis.pipeline(transaction=False)
    for entry in batch:
        pipe.lrem(OUTBOX_INFLIGHT_KEY, 1, entry)  # type: ignore[arg-type]  # redis-py types values as str
    pipe.execute()


def relay_due_webhooks(deliveries: DeliveryStore, lease_s: float, publisher: Publisher) -> int:
    """Publish the webhook attempts whose time has come. A taken entry stays scheduled at the lease's
    end until its attempt claims it, so one lost between here and a worker is published again."""
    due = deliveries.take_due(lease_s)
    for entry in due:
        publisher.webhook_attempt(entry.message, entry.traceparent)
    return len(due)


def run(redis: Redis, publisher: Publisher, stop: threading.Event, ready_file: str | None = None,
        heartbeat: Heartbeat | None = None, webhooks: tuple[DeliveryStore, float] | None = None) -> None:
    """webhooks: the delivery store and claim lease whose due retries this relay also publishes; the
    outbox wait (at most POLL_TIMEOUT_S) is then the schedule's resolution."""
    recovered = recover_inflight(redis)
    log.info("relay_started", recovered=recovered)
    if ready_file:
        Path(ready_file).write_text("relay\n")
    failed = False
    while not stop.is_set():
        try:
            if failed:  # entries of the failed batch stayed in flight: put them back first
                recover_inflight(redis)
                failed = False
            batch = take_batch(redis)
            if batch:
                relay_batch(redis, publisher, batch)
            if webhooks is not None:
                relay_due_webhooks(*webhooks, publisher)
            if heartbeat is not None:  # only after Redis answered: a relay that cannot relay goes stale
                heartbeat.beat()
        except Exception:  # broker or Redis hiccup (a restart can outlast redis-py's retries): try again
            log.exception("relay_batch_failed")
            failed = True
            stop.wait(1.0)
