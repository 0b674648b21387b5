"""The queue exporter against a real redis-server with messages published by the real Celery publisher."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from redis import Redis

from reelforge.celery_app import QUEUE_GPU_BATCH, QUEUE_GPU_INTERACTIVE, TASK_WEBHOOK, create_celery
from reelforge.core.contracts import Priority
from reelforge.core.jobs import JobRecord
from reelforge.core.lifecycle import Publisher
from reelforge.core.store import OUTBOX_KEY, JobStore
from reelforge.core.videos import new_job
from reelforge.devstack.processes import free_port, start_redis
from reelforge.observability.queues import QueueCollector, priority_keys
from reelforge.settings import Settings

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield port
    proc.stop()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _job(priority: Priority, traceparent: str | None = None) -> JobRecord:
    return new_job("acme", prompt="p", model="reelforge-mini", seconds="2", size="64x64", negative_prompt=None,
                   seed=1, fps=8, num_steps=2, guidance_scale=1.0, webhook_url=None, metadata={},
                   priority=priority, traceparent=traceparent)


def test_depth_oldest_age_unacked_outbox_and_dead_letters(redis_port: int) -> None:
    jobs, broker = Redis(port=redis_port, db=0), Redis(port=redis_port, db=1)
    jobs.flushdb()
    broker.flushdb()
    settings = Settings(environment="development", broker_url=f"redis://127.0.0.1:{redis_port}/1")
    celery = create_celery(settings)
    publisher = Publisher(celery)
    clock = FakeClock()
    registry = CollectorRegistry()
    registry.register(QueueCollector(broker, jobs, clock))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    first, second = _job(Priority.batch, TRACEPARENT), _job(Priority.batch)
    publisher.generate(first.id, Priority.batch, first.traceparent)
    publisher.generate(second.id, Priority.batch)
    # a message at a non-zero priority lands in a priority sub-queue, which the depth must include
    celery.send_task(TASK_WEBHOOK, args=[{}], queue=QUEUE_GPU_BATCH, priority=6)
    assert broker.llen(priority_keys(QUEUE_GPU_BATCH)[2]) == 1

    oldest = min(int(json.loads(broker.lindex(k, -1))["headers"]["reelforge_published_ms"])
                 for k in priority_keys(QUEUE_GPU_BATCH) if broker.llen(k))
    clock.now = oldest / 1000 + 42.5
    assert value("reelforge_queue_depth", queue=QUEUE_GPU_BATCH) == 3
    assert value("reelforge_queue_depth", queue=QUEUE_GPU_INTERACTIVE) == 0
    assert value("reelforge_queue_oldest_age_seconds", queue=QUEUE_GPU_BATCH) == pytest.approx(42.5)
    assert value("reelforge_queue_oldest_age_seconds", queue=QUEUE_GPU_INTERACTIVE) == 0
    # the message of the job created with a traceparent carries the job's trace
    message = json.loads(broker.lindex(QUEUE_GPU_BATCH, -1))
    assert message["headers"]["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]

    # a message taken by a worker and not yet acknowledged, as kombu records it
    broker.hset("unacked", "tag-1", json.dumps([message, "", QUEUE_GPU_INTERACTIVE]))
    assert value("reelforge_queue_unacked_messages", queue=QUEUE_GPU_INTERACTIVE) == 1

    store = JobStore(jobs)
    created, _ = store.create(_job(Priority.interactive))
    clock.now = created.transitions["queued"] / 1000 + 7
    assert jobs.llen(OUTBOX_KEY) == 1
    assert value("reelforge_outbox_depth") == 1
    assert value("reelforge_outbox_oldest_age_seconds") == pytest.approx(7, abs=0.01)

    store.dead_letter("webhooks", {"event_id": "e1"})
    assert value("reelforge_dead_letters", kind="webhooks") == 1
    assert value("reelforge_dead_letters", kind="jobs") == 0
