"""Quality acceptance: the evaluator's verdict on real rendered clips, and the sampler's thread and limits."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import REGISTRY

from reelforge.gpu_worker.quality import QualitySampler, verdict
from reelforge.training.clips import ClipSpec, render

SPEC = ClipSpec("circle", "red", "left", "fast", "black", seed=3)


def test_a_clip_showing_its_prompt_is_accepted_noise_is_rejected_other_prompts_unscored() -> None:
    clip = render(SPEC)
    assert verdict(clip, SPEC.caption(1)) == "accepted"
    assert verdict(clip, "a blue square moving up on a gray background") == "rejected"
    noise = np.random.default_rng(0).integers(0, 256, clip.shape, dtype=np.uint8)
    assert verdict(noise, SPEC.caption(1)) == "rejected"
    assert verdict(clip, "a cat surfing at sunset") == "unscored"


def checks(result: str) -> float:
    return REGISTRY.get_sample_value("reelforge_quality_checks_total", {"model": "m-test", "result": result}) or 0.0


def test_sampled_clips_are_scored_on_a_background_thread() -> None:
    before = checks("accepted")
    sampler = QualitySampler(rate=1.0)
    assert sampler.offer("m-test", render(SPEC), SPEC.caption(0))
    sampler._waiting.join()
    assert checks("accepted") == before + 1


def test_unsampled_clips_and_clips_offered_while_one_waits_are_not_scored() -> None:
    assert not QualitySampler(rate=0.0).offer("m-test", render(SPEC), SPEC.caption(0))
    assert not QualitySampler(rate=0.5, draw=lambda: 0.7).offer("m-test", render(SPEC), SPEC.caption(0))
    before = checks("accepted")
    sampler, clip = QualitySampler(rate=1.0), render(SPEC)
    started = time.monotonic()
    # scoring takes about 0.3 s: one clip is being scored, one waits, the third is turned away
    offered = [sampler.offer("m-test", clip, SPEC.caption(0)) for _ in range(3)]
    assert time.monotonic() - started < 0.2, "offering never blocks the job"
    assert offered[0] and not offered[2]
    sampler._waiting.join()
    assert checks("accepted") == before + sum(offered)
