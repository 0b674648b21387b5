"""GPU stage: run the engine for one job, stage its frames in object storage, hand off to post-process.

The engine is loaded once per worker process (worker_process_init) and kept warm; a job never loads it.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from celery import Task
from celery.signals import worker_process_init
from kombu.exceptions import OperationalError
from opentelemetry.trace import Span
from redis.exceptions import RedisError

from reelforge.celery_app import TASK_GENERATE, celery_app
from reelforge.core.contracts import ErrorCode, GenerateMessage, Phase, PostprocessMessage, Status
from reelforge.core.jobs import POSTPROCESS_PHASES, JobRecord, error_fields, progress_for
from reelforge.core.lifecycle import end_job, requeue_when_store_unavailable
from reelforge.core.storage import STAGING_CONTENT_TYPE, StorageError, frames_to_bytes, retrying, staging_key
from reelforge.engine.interface import GenerationRequest, StepEvent, VideoEngine
from reelforge.gpu_worker.quality import QualitySampler
from reelforge.observability import metrics
from reelforge.observability.tracing import TRACEPARENT, consume_span, tracer
from reelforge.runtime import Runtime, get_runtime
from reelforge.settings import Settings

log = structlog.get_logger("reelforge.gpu_worker")

_engine: VideoEngine | None = None
_quality: QualitySampler | None = None


class JobCancelled(Exception):
    """Raised from the step callback when the job left in_progress (cancelled, deleted, failed)."""


class LeaseLost(Exception):
    """Raised from the step callback when a newer attempt took the job over (this one outlived its lease)."""


class AttemptHeld(Exception):
    """Another attempt holds the job's lease and runs it: this message is a duplicate, for now."""


def load_engine_once(**_: Any) -> None:
    """worker_process_init hook: the GPU worker connects it, the other workers never load torch."""
    global _engine
    if _engine is None:
        settings = get_runtime().settings
        started = time.perf_counter()
        _engine = _load(settings)
        log.info("engine_loaded", model=_engine.name, backend=settings.engine_backend,
                 seconds=round(time.perf_counter() - started, 3))
        metrics.ENGINE_LOADED.labels(_engine.name).set(1)
        if settings.ready_file:
            Path(settings.ready_file).write_text(f"{_engine.name} {_engine.version}\n")


def _load(settings: Settings) -> VideoEngine:
    if settings.engine_factory:  # the fault-injection tests' wrapped engine (development only)
        module, _, name = settings.engine_factory.partition(":")
        factory: Callable[[Settings], VideoEngine] = getattr(importlib.import_module(module), name)
        return factory(settings)
    if settings.engine_backend == "triton":
        from reelforge.engine.triton.client import TritonEngine

        engine = TritonEngine(settings.triton_url, timeout_s=settings.gpu_task_time_limit_s)
        engine.wait_ready(settings.engine_load_timeout_s)
        return engine
    from reelforge.engine.mini import load_engine

    return load_engine(
        device=settings.engine_device, threads=settings.engine_threads, checkpoint=settings.engine_weights
    )


def connect_engine_preload() -> None:
    worker_process_init.connect(load_engine_once, weak=False)


def get_quality_sampler(rt: Runtime) -> QualitySampler:
    global _quality
    if _quality is None:
        _quality = QualitySampler(rt.settings.quality_sample_rate)
    return _quality


def get_engine() -> VideoEngine:
    if _engine is None:
        load_engine_once()
    assert _engine is not None
    return _engine


ENGINE_PHASES = ("encoding_prompt", "denoising", "decoding")


class PhaseClock:
    """Seconds spent in each phase, written to the job as t:<phase> fields; each phase is also a span."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._phase: str | None = None
        self._since = time.perf_counter()
        self._span: Span | None = None

    def enter(self, phase: str) -> None:
        if phase == self._phase:
            return
        self.stop()
        self._phase, self._since = phase, time.perf_counter()
        self._span = tracer.start_span(phase)

    def stop(self) -> None:
        if self._phase is not None:
            self.timings[self._phase] = self.timings.get(self._phase, 0.0) + time.perf_counter() - self._since
            self._phase = None
        if self._span is not None:
            self._span.end()
            self._span = None

    @property
    def engine_seconds(self) -> float:
        return sum(self.timings.get(phase, 0.0) for phase in ENGINE_PHASES)

    def fields(self) -> dict[str, str]:
        return {f"t:{phase}": f"{secs:.6f}" for phase, secs in self.timings.items()}


def _request_for(job: JobRecord) -> GenerationRequest:
    return GenerationRequest(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt or "",
        width=job.width,
        height=job.height,
        num_frames=job.num_frames,
        fps=job.fps,
        num_steps=job.steps,
        guidance_scale=job.guidance_scale,
        seed=job.seed,
    )


def _postprocess_message(job: JobRecord, model_version: str) -> PostprocessMessage:
    return PostprocessMessage(
        job_id=job.id,
        staging_key=staging_key(job.tenant, job.id),
        num_frames=job.num_frames,
        width=job.width,
        height=job.height,
        fps=job.fps,
        model_version=model_version,
    )


def _fail(rt: Runtime, job_id: str, code: ErrorCode, message: str) -> None:
    """The job used up its attempts: it fails, and goes to the jobs dead-letter list."""
    if end_job(rt.store, rt.publisher, job_id, Status.failed, error_fields(code, message)):
        rt.store.dead_letter("jobs", {"job_id": job_id, "code": str(code), "message": message})


class StepMeter:
    """Per-step denoise durations and, on a job's first attempt, the time to its first visible progress."""

    def __init__(self, job: JobRecord, first_attempt: bool) -> None:
        self.job = job
        self.first_attempt = first_attempt
        self._last_step: float | None = None

    def __call__(self, event: StepEvent) -> None:
        if event.phase != "denoising":
            return
        now = time.perf_counter()
        if event.step > 0 and self._last_step is not None:
            metrics.DENOISE_STEP.labels(self.job.model).observe(now - self._last_step)
        self._last_step = now
        if event.step == 1 and self.first_attempt:
            created = self.job.transitions.get(str(Status.queued))
            if created is not None:
                metrics.FIRST_PROGRESS.labels(str(self.job.priority), self.job.model).observe(
                    max(0.0, time.time() - created / 1000))


def _observe_attempt(job: JobRecord, clock: PhaseClock, outcome: str) -> None:
    metrics.phases_observed(job, clock.timings)
    metrics.GPU_SECONDS.labels(str(job.priority), job.model, outcome).observe(clock.engine_seconds)


class Lease:
    """The job's GPU lease, held by one attempt while it runs and renewed as it makes progress: a duplicate
    message for the job (redelivered after the visibility timeout, republished by the relay) waits instead of
    running the job a second time beside it."""

    def __init__(self, rt: Runtime, job_id: str, attempt: int) -> None:
        self.rt, self.job_id, self.attempt = rt, job_id, attempt

    def renew(self) -> None:
        if not self.rt.store.renew_gpu_lease(self.job_id, self.attempt, _lease_ms(self.rt)):
            raise LeaseLost(self.job_id)

    def release(self) -> None:
        self.rt.store.release_gpu_lease(self.job_id, self.attempt)


def _lease_ms(rt: Runtime) -> int:
    return int(rt.settings.gpu_lease_s * 1000)


def run_generate(rt: Runtime, engine: VideoEngine, job_id: str) -> bool:
    """One GPU attempt. Returns False when the attempt failed and may be retried; raises AttemptHeld when
    another attempt runs the job right now."""
    attempt = rt.store.start_gpu_attempt(job_id, _lease_ms(rt))
    if attempt < 0:
        raise AttemptHeld(job_id)
    job = rt.store.get(job_id)
    if job is None:
        log.warning("generate_unknown_job")
        return True
    if attempt == 0:
        # Redelivery after the frames were staged: the hand-off may have been lost with the worker.
        if job.status == Status.in_progress and Phase(job.phase) in POSTPROCESS_PHASES:
            rt.publisher.postprocess(_postprocess_message(job, engine.version))
        log.info("generate_skipped", status=job.status, phase=job.phase)
        return True
    lease = Lease(rt, job_id, attempt)
    try:
        if attempt > rt.settings.max_attempts:
            _fail(rt, job_id, ErrorCode.max_attempts_exceeded,
                  f"generation did not finish after {rt.settings.max_attempts} attempts")
            return True
        return _attempt(rt, engine, job, attempt, lease)
    except LeaseLost:  # a newer attempt took the job over while this one staged its frames
        log.info("generate_superseded", attempt=attempt)
        return True
    finally:
        lease.release()


def _attempt(rt: Runtime, engine: VideoEngine, job: JobRecord, attempt: int, lease: Lease) -> bool:
    clock = PhaseClock()
    queued_at = job.transitions.get(str(Status.queued))
    if queued_at is not None and attempt == 1:
        clock.timings["queue_wait"] = max(0.0, time.time() - queued_at / 1000)
    meter = StepMeter(job, first_attempt=attempt == 1)

    def on_step(event: StepEvent) -> None:
        clock.enter(event.phase)
        meter(event)
        lease.renew()
        phase = Phase(event.phase)
        fields = {
            "phase": str(phase),
            "step": str(event.step),
            "progress": str(progress_for(phase, event.step, event.steps)),
            **clock.fields(),
        }
        if not rt.store.update_running(job.id, fields):
            raise JobCancelled(job.id)

    log.info("generate_started", attempt=attempt)
    try:
        frames = engine.generate(_request_for(job), on_step)
    except (JobCancelled, LeaseLost) as exc:
        clock.stop()
        _observe_attempt(job, clock, "cancelled")
        log.info("generate_stopped", reason=type(exc).__name__)
        return True
    except RedisError:  # the job store, not the engine, failed: the task puts the message back
        clock.stop()
        raise
    except Exception as exc:  # any engine failure fails this attempt only
        clock.stop()
        _observe_attempt(job, clock, "failed")
        log.exception("generate_failed", attempt=attempt)
        return _attempt_failed(rt, job.id, attempt, ErrorCode.engine_error,
                               f"the engine failed: {type(exc).__name__}: {exc}")

    get_quality_sampler(rt).offer(job.model, frames, job.prompt)
    message = _postprocess_message(job, engine.version)
    clock.enter("staging")
    try:
        data = frames_to_bytes(frames)
        retrying(lambda: rt.storage.put_bytes(message.staging_key, data, STAGING_CONTENT_TYPE),
                 rt.settings.storage_retry_s, lease.renew)
    except StorageError as exc:
        log.error("staging_failed", attempt=attempt, error=str(exc))
        return _attempt_failed(rt, job.id, attempt, ErrorCode.storage_error,
                               "object storage kept failing; try again later")
    finally:
        clock.stop()
    _observe_attempt(job, clock, "completed")
    lease.renew()  # a newer attempt that took the job over hands it off, not this one
    handed_off = rt.store.update_running(
        job.id,
        {"phase": str(Phase.encoding), "progress": str(progress_for(Phase.encoding)), **clock.fields()},
    )
    if not handed_off:  # cancelled while decoding or uploading the frames
        rt.storage.delete_prefix(message.staging_key)
        return True
    rt.publisher.postprocess(message)
    log.info("generate_finished", seconds=round(sum(clock.timings.values()), 3))
    return True


def _attempt_failed(rt: Runtime, job_id: str, attempt: int, code: ErrorCode, message: str) -> bool:
    """This attempt failed: retry it (False) unless it was the last one."""
    if attempt >= rt.settings.max_attempts:
        _fail(rt, job_id, code, message)
        return True
    return False


@celery_app.task(name=TASK_GENERATE, bind=True, max_retries=None)
def generate(self: Task, message: dict[str, Any]) -> None:
    msg = GenerateMessage.model_validate(message)
    structlog.contextvars.bind_contextvars(job_id=msg.job_id, task_id=self.request.id)
    try:
        with consume_span("gpu.generate", self.request.get(TRACEPARENT), msg.job_id):
            if not run_generate(get_runtime(), get_engine(), msg.job_id):
                raise self.retry(countdown=min(2 ** self.request.retries, 30))
    except AttemptHeld:
        log.info("generate_deferred", reason="another attempt holds the job's lease")
        raise self.retry(countdown=get_runtime().settings.gpu_lease_s) from None
    except (RedisError, OperationalError) as exc:
        rt = get_runtime()
        requeue_when_store_unavailable(exc, rt.redis, rt.settings.store_wait_s)
        raise
    finally:
        structlog.contextvars.clear_contextvars()
