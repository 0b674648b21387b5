"""A weights folder whose DiTs predict a non-zero velocity that depends on prompt, latent and time.

The default random init zeroes the DiT's output layers, so it predicts zero velocity: under it a
serving path that mixed up rows, prompts or steps would still give the right frames.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reelforge.engine.checkpoints import TEACHER_FILE, VAE_FILE, record, save_model, student_file
from reelforge.engine.dit import DiT_Mini
from reelforge.engine.vae import VAE_Mini

DISTILLED_GUIDANCE = 3.0
STUDENT_STEPS = 2


def perturbed_weights(directory: Path) -> Path:
    """Teacher, STUDENT_STEPS-step student (distilled at DISTILLED_GUIDANCE) and VAE in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        for file in (TEACHER_FILE, student_file(STUDENT_STEPS)):
            dit = DiT_Mini()
            for parameter in dit.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
            save_model(dit, directory / file)
        save_model(VAE_Mini(), directory / VAE_FILE)
    record(directory, "distill", {"guidance_scale": DISTILLED_GUIDANCE})
    return directory
