"""Liveness of processes that serve no HTTP (Celery workers, the relay): a heartbeat file and its probe.

A worker can be alive and still not consume: its broker connection is lost and it is retrying, or its
event loop is stuck. The Celery worker refreshes the heartbeat from a consumer bootstep's timer, which runs
on the worker's event loop and only while the consumer is started; a lost broker connection makes Celery
restart the consumer, which stops the step. `reelforge worker-health` (Kubernetes' exec probe) fails once
the heartbeat is older than the allowed age.

`reelforge worker-drain` (the preStop hook) marks the worker as draining, then asks it for Celery's warm
shutdown: it takes no new message and finishes the one it runs. The probe passes while draining, so a
long GPU job is not killed by its liveness probe on the way out.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from celery import bootsteps


class Heartbeat:
    """A file whose modification time says when the process last proved it was doing its work."""

    def __init__(self, path: Path, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self._last = 0.0

    @property
    def drain_marker(self) -> Path:
        # A file of its own, so a beat racing the drain can never overwrite the mark.
        return self.path.with_name(self.path.name + ".draining")

    def beat(self) -> None:
        """Refresh the file, at most twice per interval (callers may call it in a tight loop)."""
        now = time.monotonic()
        if now - self._last < self.interval_s / 2:
            return
        self._last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def problem(self, max_age_s: float, since: float) -> str | None:
        """Why the process started at `since` (epoch seconds) should be restarted; None when healthy.
        Files older than the process are a previous container's, left in the pod's volume."""
        if _written_since(self.drain_marker, since):
            return None
        if not _written_since(self.path, since):
            return f"no heartbeat at {self.path} since the process started: it has not started consuming"
        age = time.time() - self.path.stat().st_mtime
        if age > max_age_s:
            return f"last heartbeat {age:.0f} s ago (allowed {max_age_s:.0f} s): the worker stopped consuming"
        return None


def _written_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except FileNotFoundError:
        return False


def process_started_at(pid: int) -> float:
    """Epoch seconds when pid started (Linux /proc), less a second: the kernel's boot time is whole seconds."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK") - 1.0


def ready_problem(ready_file: str | None, since: float) -> str | None:
    if ready_file and _written_since(Path(ready_file), since):
        return None
    return f"not ready: {ready_file or 'REELFORGE_READY_FILE (unset)'} not written since the process started"


def consumer_heartbeat_step(heartbeat: Heartbeat) -> type[bootsteps.StartStopStep]:
    """A Celery consumer bootstep that beats on the worker's event loop while the consumer runs."""

    class ConsumerHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.timer_entry: Any = None

        def start(self, parent: Any) -> None:
            heartbeat.beat()
            self.timer_entry = parent.timer.call_repeatedly(heartbeat.interval_s, heartbeat.beat)

        def stop(self, parent: Any) -> None:
            if self.timer_entry is not None:
                self.timer_entry.cancel()
                self.timer_entry = None

    return ConsumerHeartbeat


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def drain(heartbeat: Heartbeat, pid: int, timeout_s: float | None) -> bool:
    """Mark draining, send SIGTERM (Celery's warm shutdown), wait for the process to exit.
    Returns whether it exited within timeout_s (None waits for as long as it takes)."""
    heartbeat.drain_marker.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.drain_marker.touch()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while _running(pid):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
