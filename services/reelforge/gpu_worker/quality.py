"""Quality acceptance of served clips, for the executive dashboard.

A sample of generated clips is scored against its prompt by the built-in model's RGB evaluator
(training/evaluator.py), on a background thread of the GPU worker process, so no job waits for it. A clip
is accepted when its frames show everything its prompt names (colour, shape, motion, speed when named,
background); a prompt outside the evaluator's vocabulary is counted as unscored. Scoring costs CPU
(measured on the 2-core development VM: about 0.3 s for 16 frames at 64x64, about 5 s for 64 frames at
128x128 of noise), hence a sample rate (REELFORGE_QUALITY_SAMPLE_RATE) and at most one clip waiting:
a clip offered while another waits is not scored. The first clip a process scores also fits the
evaluator's shape classifier, once (about 4 s on that VM).
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable

import structlog

from reelforge.observability import metrics
from reelforge.postprocess.media import Frames  # typed in full: numpy 1.26 ndarray has no default type args
from reelforge.training.evaluator import PromptError, evaluate_clip

log = structlog.get_logger("reelforge.quality")


def verdict(frames: Frames, prompt: str) -> str:
    """accepted, rejected or unscored."""
    try:
        score = evaluate_clip(frames, prompt)
    except PromptError:
        return "unscored"
    named = (score.colour_ok, score.shape_ok, score.direction_ok, score.background_ok, score.speed_ok is not False)
    return "accepted" if all(named) else "rejected"


class QualitySampler:
    def __init__(self, rate: float, draw: Callable[[], float] = random.random) -> None:
        self.rate = rate
        self.draw = draw
        self._waiting: queue.Queue[tuple[str, Frames, str]] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None

    def offer(self, model: str, frames: Frames, prompt: str) -> bool:
        """Queue the clip for scoring if it is drawn and nothing waits; True when queued."""
        if self.rate <= 0 or self.draw() >= self.rate:
            return False
        if self._thread is None:  # started in the process that scores (a Celery child, after the fork)
            self._thread = threading.Thread(target=self._run, name="quality", daemon=True)
            self._thread.start()
        try:
            self._waiting.put_nowait((model, frames, prompt))
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while True:
            model, frames, prompt = self._waiting.get()
            try:
                metrics.QUALITY_CHECKS.labels(model, verdict(frames, prompt)).inc()
            except Exception:  # a scoring bug must never stop the worker; it is logged and skipped
                log.exception("quality_check_failed")
            finally:
                self._waiting.task_done()
