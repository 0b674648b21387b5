"""Faults of the GPU stage on real processes (scenarios 1, 2, 7 and 9 of docs/reliability.md): a worker
killed or stopped mid-denoise, a poison job, a job longer than the broker's visibility timeout. Each job
must end once: one finished GPU run, one MP4 object, one completed event id."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import (
    MAX_ATTEMPTS,
    SLOW_JOB,
    TEST_TIMEOUT_S,
    TRIALS,
    VISIBILITY_TIMEOUT_S,
    FaultStack,
    Tally,
    unique_prompt,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(TEST_TIMEOUT_S)]


def _running_pid(faults: FaultStack, prompt: str) -> int:
    pids = faults.executions(prompt)
    assert pids, f"no GPU execution of {prompt!r} recorded"
    return pids[-1]


def test_gpu_worker_killed_mid_denoise_finishes_the_job_once(
    faults: FaultStack, tally: Callable[[str, str], Tally]
) -> None:
    """Even trials kill the pool process running the job (its parent requeues the message at once); odd
    trials kill the whole worker, main process included (a lost node: the message comes back after the
    visibility timeout), and start it again."""
    row = tally("1", "kill -9 of the GPU worker mid-denoise")
    for trial in range(TRIALS):
        row.trials += 1
        video, prompt = faults.denoising_job(row, "kill gpu", trial)
        if trial % 2:
            faults.kill("gpu")
            faults.restart("gpu")
        else:
            os.kill(_running_pid(faults, prompt), signal.SIGKILL)
        faults.count_outcome(row, video, prompt)
        assert faults.get(video["id"])["attempts"] == 2
    assert (row.lost, row.duplicated) == (0, 0), row.notes


def test_sigterm_mid_job_warm_shutdown_finishes_it_once(
    faults: FaultStack, tally: Callable[[str, str], Tally]
) -> None:
    """SIGTERM to the worker's main process (what Kubernetes and `reelforge worker-drain` send): Celery's
    warm shutdown lets the running job end, then the worker exits and is started again."""
    row = tally("2", "SIGTERM of the GPU worker mid-denoise")
    for trial in range(TRIALS):
        row.trials += 1
        video, prompt = faults.denoising_job(row, "sigterm gpu", trial)
        worker = faults.stack.components["gpu"]
        log_size = worker.log_path.stat().st_size
        os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while worker.alive:
            assert time.monotonic() < deadline, f"no warm shutdown in 120 s:\n{worker.log_tail()}"
            time.sleep(0.2)
        assert "Warm shutdown" in worker.log_path.read_bytes()[log_size:].decode(errors="replace")
        faults.restart("gpu")
        faults.count_outcome(row, video, prompt)
        assert faults.get(video["id"])["attempts"] == 1, "warm shutdown finished the running job itself"
    assert (row.lost, row.duplicated) == (0, 0), row.notes


def test_poison_job_fails_after_its_attempts_and_the_queue_keeps_flowing(
    faults: FaultStack, tally: Callable[[str, str], Tally]
) -> None:
    row = tally("7", "poison job (the engine raises on every attempt)")
    for trial in range(TRIALS):
        row.trials += 1
        poison_prompt = unique_prompt("poison", trial)
        poison = faults.submit(poison_prompt)
        normal_prompt = unique_prompt("normal after", trial)
        normal = faults.submit(normal_prompt)
        row.accepted += 2
        failed = faults.wait_terminal(poison["id"])
        runs = len(faults.executions(poison_prompt))
        if failed["status"] == "failed" and failed["error"]["code"] == "engine_error":
            row.completed += 1
        else:
            row.lost += 1
            row.notes.append(f"poison {poison['id']}: {failed['status']} {failed.get('error')}")
        if runs != MAX_ATTEMPTS:
            row.duplicated += max(0, runs - MAX_ATTEMPTS)
            row.notes.append(f"poison {poison['id']}: {runs} engine runs, expected {MAX_ATTEMPTS}")
        assert failed["attempts"] == MAX_ATTEMPTS, failed
        assert "PoisonedPrompt" in failed["error"]["message"]
        faults.count_outcome(row, normal, normal_prompt)
    assert (row.lost, row.duplicated) == (0, 0), row.notes


def test_job_longer_than_the_visibility_timeout_runs_once(
    faults: FaultStack, tally: Callable[[str, str], Tally]
) -> None:
    """The broker hands an unacknowledged message to another consumer after the visibility timeout; the
    second GPU process is idle and takes it while the first still runs the job."""
    row = tally("9", f"job longer than the visibility timeout ({VISIBILITY_TIMEOUT_S} s)")
    step_s = VISIBILITY_TIMEOUT_S * 2.5 / SLOW_JOB["num_steps"]  # type: ignore[operator]
    for trial in range(TRIALS):
        row.trials += 1
        prompt = unique_prompt("outlives visibility", trial, f"slow={step_s:.2f}")
        video = faults.submit(prompt, **SLOW_JOB)
        row.accepted += 1
        faults.count_outcome(row, video, prompt)
        assert len(faults.executions(prompt)) == 1
        assert faults.get(video["id"])["attempts"] == 1
    assert (row.lost, row.duplicated) == (0, 0), row.notes
