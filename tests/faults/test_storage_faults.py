"""Object storage down mid-job (scenario 5 of docs/reliability.md): SeaweedFS killed while a job's frames
or assets are on their way to it, started again on the same ports and data after the outage; the upload
is retried and the job completes once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from reelforge.core.store import JobStore, as_text
from tests.faults.conftest import OUTAGE_S, SLOW_JOB, TEST_TIMEOUT_S, TRIALS, FaultStack, Tally, unique_prompt

pytestmark = [pytest.mark.integration, pytest.mark.timeout(TEST_TIMEOUT_S)]

# Even trials cut storage while the job denoises (the GPU stage's upload of its frames meets the outage),
# odd ones once post-process encodes (its download of the frames is done; its upload of the MP4, poster
# and spritesheet meets it).
CUT_PHASES = (("denoising",), ("encoding", "uploading"))


def _phase(faults: FaultStack, video_id: str) -> tuple[str, str]:
    status, phase = faults.redis.hmget(JobStore.job_key(video_id), "status", "phase")
    return as_text(status or ""), as_text(phase or "")


def test_object_storage_down_mid_upload_job_completes(
    faults: FaultStack, tally: Callable[[str, str], Tally]
) -> None:
    row = tally("5", f"object storage (SeaweedFS) down for {OUTAGE_S:.0f} s mid-upload")
    for trial in range(TRIALS):
        row.trials += 1
        phases = CUT_PHASES[trial % 2]
        prompt = unique_prompt("storage outage", trial, "slow=0.3")
        video = faults.submit(prompt, **SLOW_JOB)
        row.accepted += 1
        deadline = time.monotonic() + 120
        while (state := _phase(faults, video["id"]))[1] not in phases:
            assert state[0] not in ("completed", "failed"), f"{video['id']} ended before the cut: {state}"
            assert time.monotonic() < deadline, f"{video['id']} never reached {phases}: {state}"
            time.sleep(0.01)
        faults.kill("seaweedfs")
        time.sleep(OUTAGE_S)
        faults.restart("seaweedfs")
        faults.count_outcome(row, video, prompt)
    assert (row.lost, row.duplicated) == (0, 0), row.notes
