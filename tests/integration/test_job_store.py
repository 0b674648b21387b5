"""The Redis job store on a real redis-server: atomic transitions, idempotent creation, attempts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from redis import Redis

from reelforge.core.contracts import ErrorCode, Phase, Priority, Status
from reelforge.core.jobs import JobRecord
from reelforge.core.store import OUTBOX_KEY, IdempotencyConflict, JobStore, dead_letter_key
from reelforge.core.videos import new_job

pytestmark = pytest.mark.integration


@pytest.fixture()
def store(redis_server: Redis) -> JobStore:
    redis_server.flushdb()
    return JobStore(redis_server)


def job(tenant: str = "acme", **kw: object) -> JobRecord:
    params: dict[str, object] = dict(prompt="p", model="reelforge-mini", seconds="2", size="64x64",
                                     negative_prompt=None, seed=1, fps=8, num_steps=4, guidance_scale=1.0,
                                     webhook_url=None, metadata={}, priority=Priority.interactive)
    params.update(kw)
    return new_job(tenant, **params)  # type: ignore[arg-type]


def test_create_then_get_round_trips(store: JobStore) -> None:
    record, created = store.create(job(metadata={"a": "b"}))
    assert created
    assert store.get(record.id) == record
    assert store.get_for_tenant("other", record.id) is None


def test_a_cancel_racing_a_completion_has_exactly_one_winner(store: JobStore) -> None:
    for _ in range(30):
        record, _ = store.create(job())
        assert store.start_gpu_attempt(record.id) == 1
        store.update_running(record.id, {"phase": str(Phase.encoding)})
        results: dict[str, bool] = {}
        barrier = threading.Barrier(2)

        def attempt(target: Status, barrier: threading.Barrier = barrier, results: dict[str, bool] = results,
                    job_id: str = record.id) -> None:
            barrier.wait()
            results[str(target)] = store.transition(job_id, target)

        threads = [threading.Thread(target=attempt, args=(s,)) for s in (Status.completed, Status.cancelled)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results.values()) == [False, True]
        final = store.get(record.id)
        assert final is not None and final.status in ("completed", "cancelled")
        assert results[str(final.status)] is True
        assert str(final.status) in final.transitions


def test_terminal_jobs_refuse_every_transition_and_progress(store: JobStore) -> None:
    record, _ = store.create(job())
    assert store.transition(record.id, Status.cancelled)
    for target in Status:
        assert not store.transition(record.id, target)
    assert not store.update_running(record.id, {"step": "3"})
    assert store.start_gpu_attempt(record.id) == 0


def test_idempotent_create_under_concurrency(store: JobStore) -> None:
    winners: list[str] = []

    def create() -> None:
        record, _ = store.create(job(), ("key-1", "hash-a"))
        winners.append(record.id)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(winners)) == 1
    assert store.redis.zcard(store.tenant_index_key("acme")) == 1
    assert store.redis.lrange(OUTBOX_KEY, 0, -1) == [f"interactive {winners[0]}".encode()]
    with pytest.raises(IdempotencyConflict):
        store.create(job(), ("key-1", "hash-b"))
    other_tenant, created = store.create(job("globex"), ("key-1", "hash-b"))
    assert created, "idempotency keys are per tenant"


def test_attempts_count_and_stop_after_the_gpu_stage(store: JobStore) -> None:
    record, _ = store.create(job())
    assert [store.start_gpu_attempt(record.id) for _ in range(3)] == [1, 2, 3]
    store.update_running(record.id, {"phase": str(Phase.encoding)})
    assert store.start_gpu_attempt(record.id) == 0


def test_a_held_gpu_lease_keeps_a_duplicate_from_running_the_job_beside_it(store: JobStore) -> None:
    record, _ = store.create(job())
    assert store.start_gpu_attempt(record.id, lease_ms=60_000) == 1
    assert store.start_gpu_attempt(record.id, lease_ms=60_000) == -1, "a duplicate message waits"
    assert store.get(record.id).attempts == 1  # type: ignore[union-attr]
    assert store.renew_gpu_lease(record.id, 1, 60_000)
    store.release_gpu_lease(record.id, 2)  # not the holder: nothing happens
    assert store.start_gpu_attempt(record.id, lease_ms=60_000) == -1
    store.release_gpu_lease(record.id, 1)
    assert store.start_gpu_attempt(record.id, lease_ms=60_000) == 2, "released: the next attempt runs"
    assert not store.renew_gpu_lease(record.id, 1, 60_000), "attempt 1 was taken over and must stop"
    store.redis.delete(store.gpu_lease_key(record.id))  # lapsed: a slow step outlived it, nobody took over
    assert store.renew_gpu_lease(record.id, 2, 50)
    assert store.start_gpu_attempt(record.id, lease_ms=60_000) == -1
    time.sleep(0.2)  # attempt 2's worker died: its lease lapses and the redelivered message runs
    assert store.start_gpu_attempt(record.id, lease_ms=60_000) == 3


def test_listing_pages_and_skips_deleted(store: JobStore) -> None:
    ids = [store.create(job())[0].id for _ in range(5)]
    page, more = store.list("acme", None, 2, "asc")
    assert [j.id for j in page] == ids[:2] and more
    page, more = store.list("acme", ids[1], 10, "asc")
    assert [j.id for j in page] == ids[2:] and not more
    store.mark_deleted(store.get(ids[2]))  # type: ignore[arg-type]
    assert ids[2] not in [j.id for j in store.list("acme", None, 10, "desc")[0]]
    assert store.get_for_tenant("acme", ids[2]) is None


class ExplodingEngine:
    """Fixture engine whose every run fails, as a broken GPU would."""

    name = "reelforge-mini"
    version = "test"

    def generate(self, request: object, on_step: object) -> np.ndarray:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_job_failing_every_attempt_ends_failed_with_a_clear_code(
    store: JobStore, redis_server: Redis, tmp_path: Path
) -> None:
    from reelforge.celery_app import create_celery
    from reelforge.core.lifecycle import Publisher
    from reelforge.gpu_worker.tasks import run_generate
    from reelforge.runtime import Runtime
    from reelforge.settings import Settings

    settings = Settings(environment="development", max_attempts=2)
    rt = Runtime(settings=settings, redis=redis_server, store=store, tenants=None,  # type: ignore[arg-type]
                 storage=None, publisher=Publisher(create_celery(settings)), deliveries=None)  # type: ignore[arg-type]
    record, _ = store.create(job())
    assert run_generate(rt, ExplodingEngine(), record.id) is False  # attempt 1: retry
    assert run_generate(rt, ExplodingEngine(), record.id) is True  # attempt 2: give up
    final = store.get(record.id)
    assert final is not None and final.status == "failed" and final.attempts == 2
    assert final.error is not None and final.error.code == ErrorCode.engine_error
    assert "illegal memory access" in final.error.message
    assert run_generate(rt, ExplodingEngine(), record.id) is True  # redelivered: nothing to do
    assert store.get(record.id).attempts == 2  # type: ignore[union-attr]


def test_a_job_whose_workers_keep_dying_ends_max_attempts_exceeded(store: JobStore, redis_server: Redis) -> None:
    from reelforge.celery_app import create_celery
    from reelforge.core.lifecycle import Publisher
    from reelforge.gpu_worker.tasks import run_generate
    from reelforge.runtime import Runtime
    from reelforge.settings import Settings

    settings = Settings(environment="development", max_attempts=2)
    rt = Runtime(settings=settings, redis=redis_server, store=store, tenants=None,  # type: ignore[arg-type]
                 storage=None, publisher=Publisher(create_celery(settings)), deliveries=None)  # type: ignore[arg-type]
    record, _ = store.create(job())
    store.start_gpu_attempt(record.id)  # two attempts whose worker process was killed mid-run
    store.start_gpu_attempt(record.id)
    assert run_generate(rt, ExplodingEngine(), record.id) is True
    final = store.get(record.id)
    assert final is not None and final.status == "failed"
    assert final.error is not None and final.error.code == ErrorCode.max_attempts_exceeded
    dead = [json.loads(entry) for entry in redis_server.lrange(dead_letter_key("jobs"), 0, -1)]
    assert [entry["job_id"] for entry in dead][-1] == record.id, "a job out of attempts is dead-lettered"


def test_create_writes_an_outbox_entry_and_the_relay_publishes_it_once(store: JobStore, redis_server: Redis) -> None:
    import threading

    from reelforge.celery_app import QUEUE_GPU_BATCH, QUEUE_GPU_INTERACTIVE, create_celery
    from reelforge.core.lifecycle import Publisher
    from reelforge.core.store import OUTBOX_INFLIGHT_KEY, OUTBOX_KEY
    from reelforge.relay.outbox import recover_inflight, run, take_batch
    from reelforge.settings import Settings

    port = redis_server.connection_pool.connection_kwargs["port"]
    settings = Settings(environment="development", broker_url=f"redis://127.0.0.1:{port}/1")
    broker = Redis(port=port, db=1)
    broker.flushdb()
    batch_job, _ = store.create(job(priority=Priority.batch))
    live_job, _ = store.create(job(priority=Priority.interactive))
    assert store.redis.llen(OUTBOX_KEY) == 2

    # a relay that dies after taking entries leaves them in flight; the next one puts them back
    assert len(take_batch(store.redis)) == 2
    assert store.redis.llen(OUTBOX_INFLIGHT_KEY) == 2
    assert recover_inflight(store.redis) == 2

    stop = threading.Event()
    relay = threading.Thread(target=run, args=(store.redis, Publisher(create_celery(settings)), stop))
    relay.start()
    try:
        deadline = time.monotonic() + 10
        while broker.llen(QUEUE_GPU_BATCH) + broker.llen(QUEUE_GPU_INTERACTIVE) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        relay.join()
    assert broker.llen(QUEUE_GPU_BATCH) == 1 and broker.llen(QUEUE_GPU_INTERACTIVE) == 1
    assert store.redis.llen(OUTBOX_KEY) == store.redis.llen(OUTBOX_INFLIGHT_KEY) == 0
    message = json.loads(broker.lindex(QUEUE_GPU_INTERACTIVE, 0))  # type: ignore[arg-type]
    assert message["headers"]["id"] == f"{live_job.id}.generate"
    broker.flushdb()
