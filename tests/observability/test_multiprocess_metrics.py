"""Worker endpoints in prometheus-client's multiprocess mode, with real processes: counters of finished
processes are kept, live gauges (in flight, engine loaded) count only processes that are still alive,
even one killed outright that never ran its exit hook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from reelforge.observability.metrics import registry

CHILD = """
import os, sys, time
from reelforge.observability import metrics
metrics.IN_FLIGHT.labels("gpu").inc()
metrics.ENGINE_LOADED.labels("reelforge-mini").set(1)
metrics.TASKS_STARTED.labels("gpu-batch").inc()
print("ready", flush=True)
if sys.argv[1] == "exit-without-hooks":
    os._exit(0)
time.sleep(60)
"""


def child(directory: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "REELFORGE_ENVIRONMENT": "development"}
    process = subprocess.Popen([sys.executable, "-c", CHILD, mode], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_live_gauges_count_only_live_processes_and_counters_keep_everyone(tmp_path: Path) -> None:
    def value(name: str, **labels: str) -> float | None:
        return registry(str(tmp_path)).get_sample_value(name, labels)

    gone = child(tmp_path, "exit-without-hooks")
    assert gone.wait(timeout=30) == 0
    running = child(tmp_path, "stay")
    try:
        assert value("reelforge_jobs_in_flight", stage="gpu") == 1
        assert value("reelforge_engine_loaded", model="reelforge-mini") == 1
        assert value("reelforge_tasks_started_total", queue="gpu-batch") == 2
        running.send_signal(signal.SIGKILL)  # like the OOM killer: no exit hook runs
        running.wait(timeout=30)
        # no live process holds these gauges any more: no sample (a worker's parent keeps a 0 sample)
        assert value("reelforge_jobs_in_flight", stage="gpu") is None
        assert value("reelforge_engine_loaded", model="reelforge-mini") is None
        assert value("reelforge_tasks_started_total", queue="gpu-batch") == 2
    finally:
        running.kill()
