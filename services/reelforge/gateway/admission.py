"""Admission control: refuse new jobs while the queue they would join is over its depth or age limit.

The queues are read as the queue exporter reads them (observability.queues), at most once per
`admission_check_interval_s` per gateway process: a create costs no broker round trip in between.
The outbox sits in front of both GPU queues (a stopped relay fills it), so its limits count for both.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from redis import Redis

from reelforge.celery_app import GPU_QUEUE_BY_PRIORITY
from reelforge.core.contracts import Priority
from reelforge.observability.queues import QueueReading, read_outbox, read_queues
from reelforge.settings import Settings

OUTBOX = "outbox"


@dataclass(frozen=True)
class Overloaded:
    queue: str
    reason: str  # for the client: which limit, and by how much


class QueueAdmission:
    def __init__(self, broker: Redis, jobs: Redis, settings: Settings) -> None:
        self.broker = broker
        self.jobs = jobs
        self.max_depth = settings.admission_max_queue_depth
        self.max_age_s = settings.admission_max_queue_age_s
        self.interval_s = settings.admission_check_interval_s
        self._readings: dict[str, QueueReading] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_depth > 0 or self.max_age_s > 0

    def _read(self) -> dict[str, QueueReading]:
        now_ms = time.time() * 1000
        readings = read_queues(self.broker, list(GPU_QUEUE_BY_PRIORITY.values()), now_ms)
        readings[OUTBOX] = read_outbox(self.jobs, now_ms)
        return readings

    async def _fresh(self) -> dict[str, QueueReading]:
        if time.monotonic() - self._read_at < self.interval_s:
            return self._readings
        async with self._lock:  # one reading per interval however many creates arrive meanwhile
            if time.monotonic() - self._read_at >= self.interval_s:
                self._readings = await run_in_threadpool(self._read)
                self._read_at = time.monotonic()
        return self._readings

    async def check(self, priority: Priority) -> Overloaded | None:
        if not self.enabled:
            return None
        readings = await self._fresh()
        for queue in (OUTBOX, GPU_QUEUE_BY_PRIORITY[priority]):
            reading = readings.get(queue)
            if reading is None:
                continue
            if self.max_depth and reading.depth > self.max_depth:
                return Overloaded(queue, f"{reading.depth} jobs are waiting (limit {self.max_depth})")
            if self.max_age_s and reading.oldest_age_s > self.max_age_s:
                return Overloaded(queue, f"the oldest has waited {reading.oldest_age_s:.0f} s "
                                         f"(limit {self.max_age_s:.0f} s)")
        return None
