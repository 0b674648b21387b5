"""A Celery worker on reelforge's broker configuration survives Redis refusing writes (maxmemory with
noeviction, as deploy/ configures it) while it acks a task: it reconnects and keeps consuming, where
Celery's default treats the error reply as unrecoverable and the worker exits. A real Redis of its own
and a real `celery worker` process."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from reelforge.devstack.processes import ManagedProcess, free_port, start_redis

ROOT = Path(__file__).parents[2]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start_redis(port, tmp_path / "redis")
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


def test_a_worker_acking_into_a_full_redis_reconnects_and_keeps_consuming(broker: str, tmp_path: Path) -> None:
    redis = Redis.from_url(broker)
    redis.config_set("maxmemory-policy", "noeviction")
    path = f"{ROOT}{os.pathsep}{ROOT / 'services'}"
    env = {**os.environ, "REELFORGE_TEST_BROKER_URL": broker, "PYTHONPATH": path}
    argv = [sys.executable, "-m", "celery", "-A", "tests.fixtures.oom_celery_app", "worker", "-P", "solo",
            "-Q", "gpu-batch", "--without-heartbeat", "--without-mingle", "--without-gossip"]  # fmt: skip
    worker = ManagedProcess.spawn("worker", argv, tmp_path, env, cwd=ROOT)
    try:
        from tests.fixtures import oom_celery_app  # only to publish: the tasks run in the worker

        with oom_celery_app.app.connection_for_write(broker) as conn:
            oom_celery_app.fill_redis.apply_async(queue="gpu-batch", connection=conn)
        deadline = time.monotonic() + 30
        while redis.config_get("maxmemory")["maxmemory"] != "1":
            assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(3)  # the ack is refused meanwhile; the worker must still be there
        assert worker.alive, worker.log_path.read_text()[-3000:]
        redis.config_set("maxmemory", "0")
        with oom_celery_app.app.connection_for_write(broker) as conn:
            oom_celery_app.mark.apply_async(("after-refusal",), queue="gpu-batch", connection=conn)
        deadline = time.monotonic() + 60
        while redis.get("after-refusal") != b"ran":
            assert worker.alive and time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        worker.stop()
