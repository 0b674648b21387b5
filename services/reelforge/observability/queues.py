"""`reelforge exporter`: queue gauges read from Redis at each scrape, so they are never stale.

Celery's Redis transport keeps a queue as lists: the queue's own key for priority 0 and
`<queue>\\x06\\x16<n>` for the other priority steps; messages are LPUSHed and taken from the right, so
the oldest waiting message is the last element. Its age comes from the publish time every reelforge
publisher writes into the message headers (celery_app.PUBLISHED_MS_HEADER).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as KombuRedisChannel
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis

from reelforge.celery_app import ALL_QUEUES, PUBLISHED_MS_HEADER
from reelforge.core.jobs import created_ms
from reelforge.core.store import (
    DEAD_LETTER_KINDS,
    OUTBOX_INFLIGHT_KEY,
    OUTBOX_KEY,
    dead_letter_key,
    parse_outbox_entry,
)


def priority_keys(queue: str) -> list[str]:
    """The broker keys of one queue: the queue itself and its priority sub-queues."""
    return [queue if step == 0 else f"{queue}{KombuRedisChannel.sep}{step}" for step in PRIORITY_STEPS]


def _published_ms(raw: bytes | str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)["headers"][PUBLISHED_MS_HEADER]
    except (ValueError, KeyError, TypeError):  # a message some other publisher wrote: no age to tell
        return None
    return int(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class QueueReading:
    depth: int
    oldest_age_s: float  # 0 when empty, or when no waiting message carries a publish time


def read_queues(broker: Redis, queues: Sequence[str], now_ms: float) -> dict[str, QueueReading]:
    """Depth and oldest waiting age of each queue, priority sub-queues included: one pipeline."""
    pipe = broker.pipeline(transaction=False)
    for queue in queues:
        for key in priority_keys(queue):
            pipe.llen(key)
            pipe.lindex(key, -1)
    replies = pipe.execute()
    per_queue = 2 * len(PRIORITY_STEPS)
    readings = {}
    for i, queue in enumerate(queues):
        mine = replies[i * per_queue:(i + 1) * per_queue]
        stamps = [ms for ms in map(_published_ms, mine[1::2]) if ms is not None]
        age = max(0.0, (now_ms - min(stamps)) / 1000) if stamps else 0.0
        readings[queue] = QueueReading(sum(mine[0::2]), age)
    return readings


def read_outbox(jobs: Redis, now_ms: float) -> QueueReading:
    """Created jobs not yet handed to a GPU queue (waiting and in flight), and the oldest one's age."""
    pipe = jobs.pipeline(transaction=False)
    pipe.llen(OUTBOX_KEY)
    pipe.llen(OUTBOX_INFLIGHT_KEY)
    pipe.lindex(OUTBOX_KEY, -1)
    waiting, inflight, last = pipe.execute()
    age = 0.0
    if last is not None:
        age = max(0.0, (now_ms - created_ms(parse_outbox_entry(_text(last))[1])) / 1000)
    return QueueReading(waiting + inflight, age)


class QueueCollector(Collector):
    def __init__(self, broker: Redis, jobs: Redis, clock: Callable[[], float] = time.time) -> None:
        self.broker = broker
        self.jobs = jobs
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now_ms = self.clock() * 1000
        depth = GaugeMetricFamily("reelforge_queue_depth", "Messages waiting in a broker queue, priority "
                                  "sub-queues included", labels=["queue"])
        oldest = GaugeMetricFamily("reelforge_queue_oldest_age_seconds", "Age of the oldest waiting message "
                                   "of a queue since it was published (0 when empty)", labels=["queue"])
        unacked = GaugeMetricFamily("reelforge_queue_unacked_messages", "Messages delivered to a worker and not "
                                    "yet acknowledged: running, or held for a retry countdown", labels=["queue"])
        for queue, reading in read_queues(self.broker, ALL_QUEUES, now_ms).items():
            depth.add_metric([queue], reading.depth)
            oldest.add_metric([queue], reading.oldest_age_s)
        by_queue = Counter(_routing_key(raw) for raw in self.broker.hvals(KombuRedisChannel.unacked_key))
        for queue in ALL_QUEUES:
            unacked.add_metric([queue], by_queue.get(queue, 0))
        yield depth
        yield oldest
        yield unacked
        yield from self._job_store_gauges(now_ms)

    def _job_store_gauges(self, now_ms: float) -> Iterator[GaugeMetricFamily]:
        box = read_outbox(self.jobs, now_ms)
        pipe = self.jobs.pipeline(transaction=False)
        for kind in DEAD_LETTER_KINDS:
            pipe.llen(dead_letter_key(kind))
        dead = pipe.execute()
        outbox = GaugeMetricFamily("reelforge_outbox_depth", "Created jobs not yet handed to a GPU queue by the "
                                   "relay (waiting and in flight)")
        outbox.add_metric([], box.depth)
        outbox_age = GaugeMetricFamily("reelforge_outbox_oldest_age_seconds", "Age of the oldest job waiting in "
                                       "the outbox (0 when empty)")
        outbox_age.add_metric([], box.oldest_age_s)
        dead_letters = GaugeMetricFamily("reelforge_dead_letters", "Entries in a dead-letter list: jobs that "
                                         "used up their GPU attempts, webhook events that used up their "
                                         "deliveries", labels=["kind"])
        for kind, count in zip(DEAD_LETTER_KINDS, dead):
            dead_letters.add_metric([kind], count)
        yield outbox
        yield outbox_age
        yield dead_letters


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _routing_key(raw: bytes | str) -> str:
    try:
        return str(json.loads(raw)[2])
    except (ValueError, IndexError, TypeError):
        return ""
