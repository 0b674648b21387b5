"""What the Triton Python backend models share: how they load the engine and read tensors.

Runs inside Triton's Python backend stub, a process of Triton's own that imports this package through
the environment the launcher builds for it (server.py). Every stage model loads the engine from the same
REELFORGE_ENGINE_* variables as an in-process GPU worker, so both backends serve the same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic_settings import BaseSettings, SettingsConfigDict

from reelforge.engine.mini import MiniEngine, load_engine


class StageSettings(BaseSettings):
    """The engine's REELFORGE_ENGINE_* settings (the same variables settings.Settings reads)."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_ENGINE_", extra="ignore")

    device: str = "cpu"
    weights: Path | None = None
    threads: int = 0


def load_stage_engine() -> MiniEngine:
    settings = StageSettings()
    return load_engine(device=settings.device, threads=settings.threads, checkpoint=settings.weights)


def to_torch(tensor: object) -> torch.Tensor:
    """A pb_utils.Tensor (anything with as_numpy) -> a torch tensor that owns its memory."""
    return torch.from_numpy(tensor.as_numpy().copy())  # type: ignore[attr-defined]
