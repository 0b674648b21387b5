"""Stopping local components: the members of a stop stage are signalled together, so a stack whose
components are slow to stop waits out one grace period per stage, not one per component."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from reelforge.devstack.client import STACK_INFO
from reelforge.devstack.processes import ManagedProcess, stop_together
from reelforge.devstack.stack import STOP_STAGES, WORKER_ROLES, stop_detached

pytestmark = pytest.mark.integration

# A component that ignores SIGTERM, as a filer waiting on its subscriptions or a worker finishing a job.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    "time.sleep(120)",
]
GRACE_S = 2.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped-but-not-waited child shows as a zombie; it holds no port or file.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"


def _stubborn(names: tuple[str, ...], log_dir: Path) -> list[ManagedProcess]:
    processes = [ManagedProcess.spawn(name, STUBBORN, log_dir, stop_timeout_s=GRACE_S) for name in names]
    for process in processes:  # SIGTERM must not arrive before the process ignores it
        process.wait_ready(lambda p=process: "ready" in p.log_tail(), "ready line", 30)
    return processes


def test_processes_stopped_together_share_one_grace_period(tmp_path: Path) -> None:
    processes = _stubborn(WORKER_ROLES, tmp_path)
    start = time.monotonic()
    stop_together(processes)
    elapsed = time.monotonic() - start
    assert not any(process.alive for process in processes)
    # One at a time this is len(WORKER_ROLES) * GRACE_S = 10 s; together it is one grace period.
    assert GRACE_S <= elapsed < 2 * GRACE_S + 2, elapsed


def test_stop_together_leaves_no_process_of_the_group_behind(tmp_path: Path) -> None:
    parent = ManagedProcess.spawn(
        "parent",
        [
            "sh",
            "-c",
            f"{sys.executable} -c 'import time; time.sleep(120)' & echo $! > {tmp_path}/child; wait",
        ],
        tmp_path,
        stop_timeout_s=GRACE_S,
    )
    parent.wait_ready(lambda: (tmp_path / "child").exists() and (tmp_path / "child").read_text().strip() != "",
                      "child pid", 30)  # fmt: skip
    child = int((tmp_path / "child").read_text())
    stop_together([parent])
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not parent.alive and not _alive(child)


def test_reelforge_down_stops_each_stage_together(tmp_path: Path) -> None:
    """`reelforge down` works from stack.json's pids alone: every stage in order, each member at once."""
    names = tuple(name for stage in STOP_STAGES for name in stage)
    processes = _stubborn(names, tmp_path / "logs")
    (tmp_path / STACK_INFO).write_text(json.dumps({"pids": {p.name: p.pid for p in processes}}))
    start = time.monotonic()
    assert stop_detached(tmp_path, timeout_s=GRACE_S)
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 5
    while any(_alive(p.pid) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p.pid) for p in processes)
    assert not (tmp_path / STACK_INFO).exists()
    # One at a time: len(names) * GRACE_S = 18 s; by stage: len(STOP_STAGES) * GRACE_S = 6 s.
    assert len(STOP_STAGES) * GRACE_S <= elapsed < len(STOP_STAGES) * GRACE_S + 4, elapsed
