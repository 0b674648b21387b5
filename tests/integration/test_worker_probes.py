"""What the Helm chart's probes and hooks run, against a real Celery worker on a real redis-server:
`worker-health` (liveness that catches a worker alive but not consuming), `worker-drain` (preStop) and
`keys import` (API key bootstrap from a Secret)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis

from reelforge.core.tenants import TenantRegistry
from reelforge.devstack.processes import ManagedProcess, free_port, start_redis

pytestmark = pytest.mark.integration

MAX_AGE_S = "3"


def reelforge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelforge.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


def eventually(check: Callable[[], bool], what: str, timeout_s: float, log: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s} s; worker log:\n{log.log_tail()}"
        time.sleep(0.5)


def test_worker_health_fails_while_the_broker_is_gone_and_drain_keeps_it_passing(tmp_path: Path) -> None:
    port = free_port()
    redis = start_redis(port, tmp_path / "redis")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {
        "REELFORGE_ENVIRONMENT": "development",
        "REELFORGE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "REELFORGE_BROKER_URL": f"redis://127.0.0.1:{port}/1",
        "REELFORGE_HEARTBEAT_FILE": str(run_dir / "heartbeat"),
        "REELFORGE_HEARTBEAT_INTERVAL_S": "0.5",
        "REELFORGE_READY_FILE": str(run_dir / "ready"),
    }
    # A previous run of the container in the same pod left these; they must not make the probe pass.
    # Dated 5 s back: the probe's idea of the process start is up to 2 s early (whole-second boot time,
    # less a second of margin), and files younger than that would count as this run's.
    stale = time.time() - 5
    for name, text in (("ready", "webhooks\n"), ("heartbeat.draining", "")):
        (run_dir / name).write_text(text)
        os.utime(run_dir / name, (stale, stale))
    worker = ManagedProcess.spawn("worker", [sys.executable, "-m", "reelforge.cli", "worker", "webhooks"],
                                  tmp_path, {**os.environ, **env})
    probe = ("worker-health", "--max-age", MAX_AGE_S, "--pid", str(worker.pid))

    def healthy() -> bool:
        return reelforge(env, *probe, "--require-ready").returncode == 0

    try:
        assert not healthy(), "a stale drain mark or ready file let the probe pass before the worker started"
        eventually(healthy, "a healthy worker", 90, worker)

        redis.stop()  # the worker process lives on, retrying its broker connection: not consuming
        eventually(lambda: not healthy(), "a failing probe while the broker is down", 30, worker)
        assert worker.alive
        failed = reelforge(env, *probe)
        assert failed.returncode == 1 and "stopped consuming" in failed.stderr

        redis = start_redis(port, tmp_path / "redis")
        eventually(healthy, "a healthy worker after the broker came back", 90, worker)

        os.kill(worker.pid, signal.SIGSTOP)  # a frozen event loop: alive, consuming nothing
        eventually(lambda: not healthy(), "a failing probe while the worker is frozen", 30, worker)
        # preStop: the drain mark keeps the probe passing while the (here frozen) worker finishes its job
        drain = subprocess.Popen([sys.executable, "-m", "reelforge.cli", "worker-drain", "--pid", str(worker.pid),
                                  "--timeout", "60"], env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
        eventually(lambda: reelforge(env, *probe).returncode == 0, "a passing probe while draining", 30, worker)
        os.kill(worker.pid, signal.SIGCONT)
        assert drain.wait(60) == 0, drain.stderr.read() if drain.stderr else ""
        assert not worker.alive
        assert "Warm shutdown" in worker.log_path.read_text()
    finally:
        worker.stop()
        redis.stop()


def test_worker_health_refuses_to_run_without_a_heartbeat_file() -> None:
    result = reelforge({"REELFORGE_ENVIRONMENT": "development", "REELFORGE_HEARTBEAT_FILE": ""}, "worker-health")
    assert result.returncode == 1 and "REELFORGE_HEARTBEAT_FILE is not set" in result.stderr


def test_keys_import_registers_a_secret_key_once_and_refuses_weak_ones(tmp_path: Path) -> None:
    port = free_port()
    redis = start_redis(port, tmp_path / "redis")
    env = {"REELFORGE_ENVIRONMENT": "development", "REELFORGE_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    api_key = "rf_" + "k" * 40
    try:
        first = reelforge({**env, "REELFORGE_IMPORT_API_KEY": api_key}, "keys", "import", "--tenant", "acme")
        again = reelforge({**env, "REELFORGE_IMPORT_API_KEY": api_key}, "keys", "import", "--tenant", "acme")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) == json.loads(again.stdout)
        assert api_key not in first.stdout
        principal = TenantRegistry(Redis(port=port)).authenticate(api_key)
        assert principal is not None and principal.tenant == "acme"
        assert principal.key_id == json.loads(first.stdout)["key_id"]

        weak = reelforge({**env, "REELFORGE_IMPORT_API_KEY": "rf_short"}, "keys", "import", "--tenant", "acme")
        assert weak.returncode == 2 and "secrets.token_urlsafe(32)" in weak.stderr
        stolen = reelforge({**env, "REELFORGE_IMPORT_API_KEY": api_key}, "keys", "import", "--tenant", "other")
        assert stolen.returncode == 2 and "another tenant" in stolen.stderr
    finally:
        redis.stop()
