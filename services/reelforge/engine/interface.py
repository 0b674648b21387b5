"""The engine interface the GPU-stage worker depends on: load once, then generate(request, on_step).

Engines know nothing of Redis, Celery or HTTP. The worker's on_step callback may raise to stop a run
(cancel is checked between steps); the engine lets that exception propagate untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

EnginePhase = Literal["encoding_prompt", "denoising", "decoding"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: int
    num_steps: int
    guidance_scale: float
    seed: int  # 0 .. 2**32 - 1; the same request and seed give the same frames on the same device


@dataclass(frozen=True)
class StepEvent:
    phase: EnginePhase
    step: int  # denoising steps completed so far (0 before the first)
    steps: int


StepCallback = Callable[[StepEvent], None]


class VideoEngine(Protocol):
    name: str  # the model name of the catalog, e.g. "reelforge-mini"
    version: str  # weights version, written into provenance metadata

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> np.ndarray:
        """Return frames as uint8 of shape (num_frames, height, width, 3)."""
        ...
