"""MiniEngine end to end: shapes, determinism, progress events, cancellation and guidance passes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from reelforge.engine.interface import GenerationRequest, StepEvent
from reelforge.engine.mini import RANDOM_INIT_VERSION, MiniEngine, load_engine

REQUEST = GenerationRequest(
    prompt="a red fox running through snow",
    negative_prompt="",
    width=64,
    height=64,
    num_frames=16,
    fps=8,
    num_steps=2,
    guidance_scale=1.0,
    seed=1234,
)


def ignore(event: StepEvent) -> None:
    pass


class Cancelled(Exception):
    pass


@pytest.fixture(scope="module")
def engine() -> MiniEngine:
    return load_engine(random_init=True)


@pytest.fixture
def dit_calls(engine: MiniEngine) -> Iterator[list[int]]:
    calls: list[int] = []
    handle = engine.dit.register_forward_hook(lambda module, args, out: calls.append(1))
    yield calls
    handle.remove()


def test_engine_identity(engine: MiniEngine) -> None:
    assert engine.name == "reelforge-mini"
    assert engine.version == RANDOM_INIT_VERSION


@pytest.mark.parametrize(
    ("width", "height", "num_frames"),
    [(64, 64, 16), (128, 64, 24), (64, 128, 32), (128, 128, 16), (64, 64, 48)],
)
def test_output_shape_and_dtype(engine: MiniEngine, width: int, height: int, num_frames: int) -> None:
    request = replace(REQUEST, width=width, height=height, num_frames=num_frames, num_steps=1)
    frames = engine.generate(request, ignore)
    assert frames.shape == (num_frames, height, width, 3)
    assert frames.dtype == np.uint8


def test_same_seed_same_frames_different_seed_different_frames(engine: MiniEngine) -> None:
    first = engine.generate(REQUEST, ignore)
    again = engine.generate(REQUEST, ignore)
    other = engine.generate(replace(REQUEST, seed=REQUEST.seed + 1), ignore)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_step_events_in_order(engine: MiniEngine) -> None:
    events: list[StepEvent] = []
    engine.generate(replace(REQUEST, num_steps=3), events.append)
    assert [(e.phase, e.step, e.steps) for e in events] == [
        ("encoding_prompt", 0, 3),
        ("denoising", 0, 3),
        ("denoising", 1, 3),
        ("denoising", 2, 3),
        ("denoising", 3, 3),
        ("decoding", 3, 3),
    ]


def test_exception_from_on_step_propagates_and_stops_denoising(
    engine: MiniEngine, dit_calls: list[int]
) -> None:
    events: list[StepEvent] = []

    def cancel_after_two_steps(event: StepEvent) -> None:
        events.append(event)
        if event.phase == "denoising" and event.step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        engine.generate(replace(REQUEST, num_steps=5), cancel_after_two_steps)
    assert len(dit_calls) == 2
    assert events[-1] == StepEvent("denoising", 2, 5)


@pytest.mark.parametrize(
    ("guidance_scale", "negative_prompt", "passes_per_step"),
    [(0.0, "", 1), (1.0, "", 1), (1.0, "blurry", 1), (5.0, "", 2), (5.0, "blurry", 2)],
)
def test_guidance_runs_unconditional_pass_only_above_one(
    engine: MiniEngine,
    dit_calls: list[int],
    guidance_scale: float,
    negative_prompt: str,
    passes_per_step: int,
) -> None:
    request = replace(REQUEST, num_steps=3, guidance_scale=guidance_scale, negative_prompt=negative_prompt)
    engine.generate(request, ignore)
    assert len(dit_calls) == 3 * passes_per_step


def test_size_not_multiple_of_eight_is_refused(engine: MiniEngine) -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        engine.generate(replace(REQUEST, width=60), ignore)


def test_every_process_builds_the_same_weights_without_touching_the_global_rng(engine: MiniEngine) -> None:
    rng_before = torch.random.get_rng_state()
    second = MiniEngine(random_init=True)
    assert torch.equal(rng_before, torch.random.get_rng_state())
    for name, tensor in engine.dit.state_dict().items():
        assert torch.equal(tensor, second.dit.state_dict()[name]), name
    for name, tensor in engine.vae.state_dict().items():
        assert torch.equal(tensor, second.vae.state_dict()[name]), name


def test_checkpoint_weights_and_version_are_loaded(engine: MiniEngine, tmp_path: Path) -> None:
    dit_state = {k: v.clone() for k, v in engine.dit.state_dict().items()}
    dit_state["final_layer.linear.bias"] += 0.5
    path = tmp_path / "mini.pt"
    torch.save({"dit": dit_state, "vae": engine.vae.state_dict(), "version": "0.2.0-test"}, path)
    trained = load_engine(checkpoint=path)
    assert trained.version == "0.2.0-test"
    assert torch.equal(trained.dit.final_layer.linear.bias, dit_state["final_layer.linear.bias"])
    assert not np.array_equal(trained.generate(REQUEST, ignore), engine.generate(REQUEST, ignore))
