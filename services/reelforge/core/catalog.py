"""What each served model accepts. The gateway validates against this before anything is enqueued."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    sizes: tuple[str, ...]  # "WxH", the OpenAI convention
    seconds: tuple[str, ...]  # OpenAI sends seconds as a string
    fps: tuple[int, ...]
    min_steps: int
    max_steps: int
    default_size: str
    default_seconds: str
    default_fps: int
    default_steps: int
    default_guidance_scale: float
    max_guidance_scale: float = 20.0


# The built-in model: a small latent video DiT that runs on CPU. Frame counts (seconds * fps) are all
# multiples of the VAE's 4x temporal compression; sizes are multiples of 8 (4x VAE, 2x2 patches).
REELFORGE_MINI = ModelSpec(
    name="reelforge-mini",
    sizes=("64x64", "128x128", "128x64", "64x128"),
    seconds=("2", "4"),
    fps=(8, 12, 16),
    min_steps=1,
    max_steps=50,
    default_size="64x64",
    default_seconds="2",
    default_fps=8,
    default_steps=4,
    # The scale the shipped students were distilled at (engine/weights/manifest.json, stages.distill): the
    # API's defaults (4 steps, this guidance) run the 4-step student, one DiT pass a step.
    default_guidance_scale=4.0,
)

MODELS: dict[str, ModelSpec] = {REELFORGE_MINI.name: REELFORGE_MINI}
DEFAULT_MODEL = REELFORGE_MINI.name


def parse_size(size: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    width, height = size.split("x")
    return int(width), int(height)
