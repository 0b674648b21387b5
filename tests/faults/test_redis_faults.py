"""Faults of Redis, the job store and broker (scenarios 3, 4 and 8 of docs/reliability.md): killed and
restarted from its AOF, a worker's connections cut, full at maxmemory. Every job the API accepted must
still be there afterwards and complete once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reelforge.devstack.processes import ManagedProcess, free_port
from tests.faults.conftest import (
    OUTAGE_S,
    SLOW_JOB,
    TEST_TIMEOUT_S,
    TRIALS,
    FaultStack,
    Tally,
    unique_prompt,
    wait_file,
)
from tests.faults.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(TEST_TIMEOUT_S)]


def _accept(faults: FaultStack, row: Tally, jobs: list[tuple[dict[str, Any], str]], prompt: str,
            **params: Any) -> int:
    """Try to create a job; an accepted one (200) joins jobs. Returns the status code."""
    response = faults.create(prompt, **params)
    if response.status_code == 200:
        row.accepted += 1
        jobs.append((response.json(), prompt))
    return response.status_code


def test_redis_killed_and_restarted_keeps_every_accepted_job(
    faults: FaultStack, tally: Callable[[str, str], Tally]
) -> None:
    """kill -9 of redis-server (AOF on, appendfsync everysec as deploy/ configures it) while one job
    denoises and others wait in the queue and the outbox; creates during the outage get 503."""
    row = tally("3", "kill -9 of Redis, restarted from its AOF")
    for trial in range(TRIALS):
        row.trials += 1
        jobs: list[tuple[dict[str, Any], str]] = []
        slow = unique_prompt("redis crash running", trial, "slow=0.4")
        assert _accept(faults, row, jobs, slow, **SLOW_JOB) == 200
        for n in range(3):
            assert _accept(faults, row, jobs, unique_prompt(f"redis crash queued {n}", trial)) == 200
        faults.wait_denoising(jobs[0][0]["id"])
        faults.kill("redis")
        refused = faults.create(unique_prompt("redis down", trial))
        assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
        faults.restart("redis")
        for video, _ in jobs:  # still there right after the restart, before any worker touched it again
            assert faults.client.get(f"/v1/videos/{video['id']}").status_code == 200
        # the relay, the workers and the gateway's pools all reconnect: a job created now runs too
        assert _accept(faults, row, jobs, unique_prompt("after redis restart", trial)) == 200
        for video, prompt in jobs:
            faults.count_outcome(row, video, prompt)
    assert (row.lost, row.duplicated) == (0, 0), row.notes


def _probe(env: dict[str, str], pid: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelforge.cli", "worker-health", "--max-age", "4", "--pid",
                           str(pid)], capture_output=True, text=True, timeout=60, env=env)


def _eventually(check: Callable[[], bool], what: str, timeout_s: float, worker: ManagedProcess) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"{what} not reached in {timeout_s} s:\n{worker.log_tail()}"
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture()
def proxied_gpu_worker(faults: FaultStack) -> Iterator[tuple[ManagedProcess, TcpProxy, dict[str, str]]]:
    """The stack's GPU worker is stopped; this one reaches Redis (jobs and broker) only through a proxy."""
    redis_port = int(faults.stack.info["redis_url"].rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(redis_port)
    run = faults.stack.config.data_dir / "run"
    env = {**faults.env,
           "REELFORGE_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
           "REELFORGE_BROKER_URL": f"redis://127.0.0.1:{proxy.port}/1",
           "REELFORGE_READY_FILE": str(run / "gpu-proxied.ready"),
           "REELFORGE_HEARTBEAT_FILE": str(run / "gpu-proxied.heartbeat"),
           "REELFORGE_HEARTBEAT_INTERVAL_S": "1",
           "REELFORGE_METRICS_PORT": str(free_port())}
    faults.stack.components["gpu"].stop()
    worker = ManagedProcess.spawn("gpu-proxied", [sys.executable, "-m", "reelforge.cli", "worker", "gpu"],
                                  faults.stack.config.data_dir / "logs", env)
    try:
        wait_file(run / "gpu-proxied.ready", worker)
        yield worker, proxy, env
    finally:
        worker.stop()
        proxy.cut()
        faults.restart("gpu")


def test_cut_redis_connection_worker_resumes_and_liveness_catches_it(
    faults: FaultStack, tally: Callable[[str, str], Tally],
    proxied_gpu_worker: tuple[ManagedProcess, TcpProxy, dict[str, str]],
) -> None:
    worker, proxy, env = proxied_gpu_worker
    row = tally("4", f"GPU worker's Redis connections cut for {OUTAGE_S:.0f} s")
    _eventually(lambda: _probe(env, worker.pid).returncode == 0, "a healthy probe", 60, worker)
    for trial in range(TRIALS):
        row.trials += 1
        jobs: list[tuple[dict[str, Any], str]] = []
        assert _accept(faults, row, jobs, unique_prompt("cut running", trial, "slow=0.4"), **SLOW_JOB) == 200
        faults.wait_denoising(jobs[0][0]["id"])
        proxy.cut()
        cut_at = time.monotonic()
        assert _accept(faults, row, jobs, unique_prompt("cut queued", trial)) == 200  # the gateway reaches Redis
        # the cut lasts until the probe has failed, at least OUTAGE_S
        caught = _eventually(lambda: _probe(env, worker.pid).returncode != 0, "a failing probe", 120, worker)
        assert worker.alive
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        row.notes.append(f"trial {trial}: probe failed {caught:.0f} s into a {time.monotonic() - cut_at:.0f} s cut")
        proxy.restore()
        for video, prompt in jobs:
            faults.count_outcome(row, video, prompt)
        _eventually(lambda: _probe(env, worker.pid).returncode == 0, "a healthy probe after the cut", 60, worker)
    assert (row.lost, row.duplicated) == (0, 0), row.notes


def test_redis_at_maxmemory_refuses_creates_with_503_and_loses_nothing(
    faults: FaultStack, tally: Callable[[str, str], Tally]
) -> None:
    """maxmemory below what Redis holds, policy noeviction (as deploy/ configures it): every write is
    refused. Creates get 503 + Retry-After, reads still work, no key is evicted; once memory is raised
    again every accepted job completes, the one that was denoising during the refusal included."""
    row = tally("8", "Redis at maxmemory (noeviction)")
    redis = faults.redis
    redis.config_set("maxmemory-policy", "noeviction")
    try:
        for trial in range(TRIALS):
            row.trials += 1
            jobs: list[tuple[dict[str, Any], str]] = []
            assert _accept(faults, row, jobs, unique_prompt("full running", trial, "slow=0.4"), **SLOW_JOB) == 200
            assert _accept(faults, row, jobs, unique_prompt("full queued", trial)) == 200
            faults.wait_denoising(jobs[0][0]["id"])
            redis.config_set("maxmemory", "1")
            for n in range(3):
                refused = faults.create(unique_prompt(f"full refused {n}", trial))
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"]
                assert "full" in refused.json()["error"]["message"]
            for video, _ in jobs:
                assert faults.client.get(f"/v1/videos/{video['id']}").status_code == 200
            time.sleep(2)  # the workers meet the refusal too
            assert redis.info("stats")["evicted_keys"] == 0
            redis.config_set("maxmemory", "0")
            for video, prompt in jobs:
                faults.count_outcome(row, video, prompt)
    finally:
        redis.config_set("maxmemory", "0")
    assert (row.lost, row.duplicated) == (0, 0), row.notes
