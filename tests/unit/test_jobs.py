"""Job state machine, progress mapping and the Redis-hash round trip."""

from __future__ import annotations

from reelforge.core.contracts import Phase, Priority, Status
from reelforge.core.jobs import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    JobRecord,
    allowed_sources,
    new_job_id,
    progress_for,
)


def make_job(**overrides: object) -> JobRecord:
    fields: dict[str, object] = dict(
        id=new_job_id(), tenant="acme", model="reelforge-mini", status=Status.queued, phase=Phase.queued,
        progress=0, created_at=1_700_000_000, prompt="a red circle", seconds="2", size="128x64", seed=7,
        fps=8, steps=4, guidance_scale=1.0, priority=Priority.batch,
    )
    fields.update(overrides)
    return JobRecord.model_validate(fields)


def test_terminal_statuses_have_no_way_out() -> None:
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()


def test_only_live_statuses_can_be_cancelled() -> None:
    assert allowed_sources(Status.cancelled) == {Status.queued, Status.in_progress}
    assert allowed_sources(Status.completed) == {Status.in_progress}


def test_progress_is_monotonic_across_phases_and_steps() -> None:
    sequence = [progress_for(Phase.encoding_prompt)]
    sequence += [progress_for(Phase.denoising, step, 4) for step in range(5)]
    sequence += [progress_for(Phase.decoding), progress_for(Phase.encoding), progress_for(Phase.uploading)]
    assert sequence == sorted(sequence)
    assert sequence[-1] < 100  # 100 only once the job is completed


def test_job_ids_sort_by_creation_time() -> None:
    ids = [new_job_id() for _ in range(2000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_hash_round_trip_keeps_every_field() -> None:
    job = make_job(metadata={"user": "42"}, timings={"denoising": 1.25}, transitions={"queued": 123},
                   webhook_url="https://example.com/hook", negative_prompt="blurry")
    fields = job.to_hash()
    assert all(isinstance(v, str) for v in fields.values())
    assert JobRecord.from_hash(fields) == job


def test_size_and_frames_are_derived() -> None:
    job = make_job()
    assert (job.width, job.height, job.num_frames) == (128, 64, 16)
    assert "tenant" not in job.to_video().model_dump()
