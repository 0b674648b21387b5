"""The engine the fault tests plug into the GPU worker (REELFORGE_ENGINE_FACTORY=tests.faults.fixture_engine:load):
the real built-in engine, with failure modes chosen by words in the prompt, so one stack serves every scenario.

- `poison`: raises before the first step, on every attempt.
- `slow=S`: sleeps S seconds after each denoising step (kill it mid-denoise, outlive a visibility timeout).
Every execution appends `pid prompt` to the file named by REELFORGE_TEST_EXECUTIONS_FILE, so a test counts
how often the GPU stage ran a job.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import numpy as np

from reelforge.engine.interface import GenerationRequest, StepCallback, StepEvent, VideoEngine
from reelforge.settings import Settings

EXECUTIONS_ENV = "REELFORGE_TEST_EXECUTIONS_FILE"
POISON = "poison"


class PoisonedPrompt(RuntimeError):
    pass


class FaultyEngine:
    def __init__(self, inner: VideoEngine) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = inner.version

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> np.ndarray[Any, Any]:
        path = os.environ.get(EXECUTIONS_ENV)
        if path:
            with open(path, "a") as log:  # one short append per line: lines of processes never interleave
                log.write(f"{os.getpid()} {request.prompt}\n")
        if POISON in request.prompt:
            raise PoisonedPrompt(f"the engine refuses this prompt: {request.prompt}")
        found = re.search(r"slow=([0-9.]+)", request.prompt)
        delay = float(found.group(1)) if found else 0.0

        def stepped(event: StepEvent) -> None:
            on_step(event)
            if delay and event.phase == "denoising" and event.step < event.steps:
                time.sleep(delay)

        return self.inner.generate(request, stepped)


def load(settings: Settings) -> FaultyEngine:
    from reelforge.engine.mini import load_engine

    return FaultyEngine(load_engine(device=settings.engine_device, threads=settings.engine_threads,
                                    checkpoint=settings.engine_weights))


def executions(path: str, prompt: str) -> list[int]:
    """The pids of the GPU-stage executions of prompt (one per run of the engine)."""
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        return []
    return [int(pid) for pid, text in (line.split(" ", 1) for line in lines) if text == prompt]
