"""Video operations behind the HTTP API: build a job, cancel, delete. Raise core exceptions only.

Creation itself is one Redis script (job + index + idempotency key + outbox entry); see core.store.
"""

from __future__ import annotations

from reelforge.core.contracts import Phase, Priority, Status
from reelforge.core.jobs import JobRecord, new_job_id, now_ms
from reelforge.core.lifecycle import end_job
from reelforge.core.storage import staging_key
from reelforge.runtime import Runtime


class NotCancellable(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def new_job(tenant: str, *, prompt: str, model: str, seconds: str, size: str, negative_prompt: str | None,
            seed: int, fps: int, num_steps: int, guidance_scale: float, webhook_url: str | None,
            metadata: dict[str, str], priority: Priority, traceparent: str | None = None) -> JobRecord:
    created_ms = now_ms()
    return JobRecord(
        id=new_job_id(), tenant=tenant, model=model, status=Status.queued, phase=Phase.queued, progress=0,
        created_at=created_ms // 1000, prompt=prompt, seconds=seconds, size=size,
        negative_prompt=negative_prompt, seed=seed, fps=fps, steps=num_steps, guidance_scale=guidance_scale,
        webhook_url=webhook_url, metadata=metadata, priority=priority,
        traceparent=traceparent, trace_id=traceparent.split("-")[1] if traceparent else None,
        transitions={str(Status.queued): created_ms},
    )


def cancel(rt: Runtime, job: JobRecord) -> JobRecord:
    """Cancel a queued or running job. The GPU worker notices at its next step and stops."""
    if job.is_terminal:
        if job.status == Status.cancelled:
            return job
        raise NotCancellable(str(job.status))
    if not end_job(rt.store, rt.publisher, job.id, Status.cancelled):
        latest = rt.store.get(job.id)
        if latest is None or latest.status != Status.cancelled:
            raise NotCancellable(str(latest.status if latest else "deleted"))
    rt.storage.delete_prefix(staging_key(job.tenant, job.id))
    latest = rt.store.get(job.id)
    assert latest is not None
    return latest


def delete(rt: Runtime, job: JobRecord) -> None:
    """Cancel if still running, delete every stored asset, and hide the job from the API."""
    if not job.is_terminal:
        end_job(rt.store, rt.publisher, job.id, Status.cancelled)
    rt.store.mark_deleted(job)
    rt.storage.delete_prefix(f"{job.tenant}/{job.id}/")
