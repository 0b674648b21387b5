"""Typed, versioned contracts: the video object of the HTTP API, queue messages and webhook events.

proto/reelforge/v1/ mirrors VideoObject and WebhookEvent for non-Python consumers; a test keeps the two
in step field for field. Queue messages carry only ids and small scalars: frames travel through object
storage, never through Redis.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CONTRACT_VERSION = 1


class Status(StrEnum):
    queued = "queued"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = frozenset({Status.completed, Status.failed, Status.cancelled})


class Phase(StrEnum):
    queued = "queued"
    encoding_prompt = "encoding_prompt"
    denoising = "denoising"
    decoding = "decoding"
    encoding = "encoding"
    uploading = "uploading"


class Priority(StrEnum):
    interactive = "interactive"
    batch = "batch"


class ErrorCode(StrEnum):
    """Codes a client may see in video.error.code. Stable: clients branch on them."""

    engine_error = "engine_error"
    encode_error = "encode_error"
    storage_error = "storage_error"
    max_attempts_exceeded = "max_attempts_exceeded"
    internal_error = "internal_error"


class VideoError(BaseModel):
    code: str
    message: str


class VideoObject(BaseModel):
    """The video object of the OpenAI Videos API, plus reelforge extensions (extra fields only)."""

    model_config = ConfigDict(use_enum_values=True)

    id: str
    object: Literal["video"] = "video"
    model: str
    status: Status
    progress: int = Field(ge=0, le=100)
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    error: VideoError | None = None
    prompt: str
    seconds: str
    size: str
    remixed_from_video_id: str | None = None
    # reelforge extensions
    phase: Phase
    step: int = 0
    steps: int
    timings: dict[str, float] = Field(default_factory=dict, description="seconds spent per phase")
    attempts: int = 0
    negative_prompt: str | None = None
    seed: int
    fps: int
    guidance_scale: float
    priority: Priority
    metadata: dict[str, str] = Field(default_factory=dict)
    trace_id: str | None = Field(default=None, description="OpenTelemetry trace of this job (32 hex digits)")


class GenerateMessage(BaseModel):
    """gpu-interactive / gpu-batch queue: run the engine for one job."""

    v: Literal[1] = 1
    job_id: str


class PostprocessMessage(BaseModel):
    """postprocess queue: encode staged frames, upload the assets, complete the job."""

    v: Literal[1] = 1
    job_id: str
    staging_key: str
    num_frames: int
    width: int
    height: int
    fps: int
    # The engine's weights version, for the MP4's provenance tags; messages from older workers lack it.
    model_version: str = "unknown"


WebhookEventType = Literal["video.completed", "video.failed", "video.cancelled"]

EVENT_TYPE_BY_STATUS: dict[Status, WebhookEventType] = {
    Status.completed: "video.completed",
    Status.failed: "video.failed",
    Status.cancelled: "video.cancelled",
}


class WebhookMessage(BaseModel):
    """webhooks queue: one delivery attempt of one event for one job."""

    v: Literal[1] = 1
    job_id: str
    event_id: str
    type: WebhookEventType
    attempt: int = Field(default=1, ge=1, description="1 for the first attempt; retries come from the schedule")


class WebhookEvent(BaseModel):
    """Body of a Standard Webhooks delivery: {type, timestamp (RFC 3339), data}."""

    type: WebhookEventType
    timestamp: str
    data: VideoObject
