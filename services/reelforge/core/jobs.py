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

from pydantic import BaseModel, Field

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


class JobRecord(VideoObject):
    """A video object plus what only the platform sees."""

    tenant: str
    webhook_url: str | None = None
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
        return VideoObject.model_validate(self.model_dump(include=set(VideoObject.model_fields)))

    def to_hash(self) -> dict[str, str]:
        data = self.model_dump(mode="json", exclude={"timings", "transitions"})
        fields: dict[str, str] = {}
        for key, value in data.items():
            if value is None:
                continue
            if isinstance(value, (dict, list)):
                fields[key] = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, bool):
                fields[key] = "1" if value else "0"
            else:
                fields[key] = str(value)
        fields.update({f"t:{phase}": f"{secs:.6f}" for phase, secs in self.timings.items()})
        fields.update({f"at:{status}": str(ms) for status, ms in self.transitions.items()})
        return fields

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "JobRecord":
        data: dict[str, Any] = {}
        timings: dict[str, float] = {}
        transitions: dict[str, int] = {}
        for key, value in fields.items():
            if key.startswith("t:"):
                timings[key[2:]] = float(value)
            elif key.startswith("at:"):
                transitions[key[3:]] = int(value)
            elif key in ("metadata", "error"):
                data[key] = json.loads(value)
            elif key == "deleted":
                data[key] = value == "1"
            else:
                data[key] = value
        return cls.model_validate({**data, "timings": timings, "transitions": transitions})


def error_fields(code: str, message: str) -> dict[str, str]:
    return {"error": VideoError(code=code, message=message).model_dump_json()}
