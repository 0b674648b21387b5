"""The job record and its state machine.

A job is one Redis hash. Scalars are stored as strings; `metadata` and `error` as JSON; per-phase
timings as `t:<phase>` fields and transition times as `at:<status>` fields (unix ms), so a progress
update touches only the fields it changes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from pydantic import Field

from reelforge.core.contracts import TERMINAL_STATUSES, Phase, Status, VideoError, VideoObject

# status -> statuses it may move to. Terminal statuses have no way out: a cancel and a completion that
# race are resolved by whichever transition the store applies first; the other finds a terminal status.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.queued: frozenset({Status.in_progress, Status.failed, Status.cancelled}),
    Status.in_progress: frozenset({Status.in_progress, Status.completed, Status.failed, Status.cancelled}),
    Status.completed: frozenset(),
    Status.failed: frozenset(),
    Status.cancelled: frozenset(),
}

GPU_PHASES = frozenset({Phase.queued, Phase.encoding_prompt, Phase.denoising, Phase.decoding})
POSTPROCESS_PHASES = frozenset({Phase.encoding, Phase.uploading})

# Share of the progress bar each phase covers: denoising dominates, so steps move it most.
_PROGRESS_SPAN: dict[Phase, tuple[int, int]] = {
    Phase.queued: (0, 0),
    Phase.encoding_prompt: (0, 5),
    Phase.denoising: (5, 85),
    Phase.decoding: (85, 90),
    Phase.encoding: (90, 97),
    Phase.uploading: (97, 99),
}


def allowed_sources(target: Status) -> frozenset[Status]:
    return frozenset(src for src, targets in TRANSITIONS.items() if target in targets)


def progress_for(phase: Phase, step: int = 0, steps: int = 1) -> int:
    start, end = _PROGRESS_SPAN[phase]
    if phase is not Phase.denoising or steps <= 0:
        return start
    return start + (end - start) * min(step, steps) // steps


_id_lock = threading.Lock()
_last_id: tuple[int, int] = (0, 0)


def new_job_id() -> str:
    """Time-ordered id (a monotonic ULID in hex): lexicographic order is creation order within a
    process, and across processes to the millisecond. Cursor pagination relies on it."""
    global _last_id
    with _id_lock:
        ms, rand = time.time_ns() // 1_000_000, int.from_bytes(os.urandom(8), "big")
        if ms <= _last_id[0]:
            ms, rand = _last_id[0], (_last_id[1] + 1) % 2**64
        _last_id = (ms, rand)
    return f"video_{ms:012x}{rand:016x}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def created_ms(job_id: str) -> int:
    """The creation time (unix ms) a job id carries in its first 12 hex digits."""
    return int(job_id[len("video_"):len("video_") + 12], 16)


class JobRecord(VideoObject):
    """A video object plus what only the platform sees."""

    tenant: str
    webhook_url: str | None = None
    traceparent: str | None = Field(default=None, description="W3C trace context of the creating request")
    deleted: bool = False
    transitions: dict[str, int] = Field(default_factory=dict, description="status -> unix ms")

    @property
    def width(self) -> int:
        return int(self.size.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("x")[1])

    @property
    def num_frames(self) -> int:
        return int(self.seconds) * self.fps

    @property
    def is_terminal(self) -> bool:
        return Status(self.status) in TERMINAL_STATUSES

    def to_video(self) -> VideoObject:
        return VideoObject.model_validate(self.model_dump(include=_VIDEO_FIELDS))

    def video_json(self) -> str:
        """The API's video object as JSON, serialised straight from the record (hot path)."""
        return self.model_dump_json(include=_VIDEO_FIELDS)

    def to_hash(self) -> dict[str, str]:
        fields = {"spec": self.model_dump_json(include=SPEC_FIELDS)}
        # Defaults (progress 0, attempts 0, ...) are not written: a new job is a short script call.
        state = self.model_dump(mode="json", include=_SCALAR_STATE_FIELDS, exclude_defaults=True)
        fields.update({key: str(value) for key, value in state.items()})
        if self.error is not None:
            fields["error"] = self.error.model_dump_json()
        if self.deleted:
            fields["deleted"] = "1"
        fields.update({f"t:{phase}": f"{secs:.6f}" for phase, secs in self.timings.items()})
        fields.update({f"at:{status}": str(ms) for status, ms in self.transitions.items()})
        return fields

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> JobRecord:
        data: dict[str, Any] = json.loads(fields["spec"])
        timings: dict[str, float] = {}
        transitions: dict[str, int] = {}
        for key, value in fields.items():
            if key.startswith("t:"):
                timings[key[2:]] = float(value)
            elif key.startswith("at:"):
                transitions[key[3:]] = int(value)
            elif key == "error":
                data[key] = json.loads(value)
            elif key == "deleted":
                data[key] = value == "1"
            elif key != "spec":
                data[key] = value
        return cls.model_validate({**data, "timings": timings, "transitions": transitions})


# The request as accepted never changes after creation: one JSON field, written once. What moves
# (status, progress, timings, ...) is one hash field each, so a progress update touches only its fields.
SPEC_FIELDS = {
    "id", "object", "model", "created_at", "prompt", "seconds", "size", "remixed_from_video_id", "steps",
    "negative_prompt", "seed", "fps", "guidance_scale", "priority", "metadata", "tenant", "webhook_url",
    "trace_id", "traceparent",
}
_SCALAR_STATE_FIELDS = {"status", "phase", "progress", "step", "attempts", "completed_at", "expires_at"}
_VIDEO_FIELDS = set(VideoObject.model_fields)
assert SPEC_FIELDS | _SCALAR_STATE_FIELDS | {"error", "deleted", "timings", "transitions"} == set(
    JobRecord.model_fields), "every JobRecord field must be stored either in the spec or as state"


def error_fields(code: str, message: str) -> dict[str, str]:
    return {"error": VideoError(code=code, message=message).model_dump_json()}
