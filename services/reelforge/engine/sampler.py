"""Euler sampler for rectified flow, with classifier-free guidance. Pure: no model, no state.

Convention: x_t = (1 - t) * x_0 + t * noise, the model predicts v = noise - x_0, and sampling walks
t from 1 (noise) to 0 (data) with x <- x + (t_next - t) * v.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
"""velocity(x, t, conditional) -> v: the model with the prompt (True) or the negative/null prompt."""


def flow_timesteps(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """num_steps + 1 times from 1 to 0. shift > 1 spends more steps at high noise, where the layout of
    the clip is decided (SD3's time shift: t' = s t / (1 + (s - 1) t))."""
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def guided_velocity(
    velocity: Velocity, x: torch.Tensor, t: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """v_uncond + g * (v_cond - v_uncond); at g <= 1 only the conditional pass runs, which is also how
    a distilled student with guidance folded into its weights is sampled."""
    v_cond = velocity(x, t, True)
    if guidance_scale <= 1.0:
        return v_cond
    v_uncond = velocity(x, t, False)
    return v_uncond + guidance_scale * (v_cond - v_uncond)


def sample(
    velocity: Velocity,
    noise: torch.Tensor,
    num_steps: int,
    guidance_scale: float,
    shift: float = 1.0,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Integrate from noise (t = 1) to a clean latent (t = 0); on_step(i) after step i = 1..num_steps.
    Whatever on_step raises propagates, which is how a caller stops a run between steps."""
    times = flow_timesteps(num_steps, shift).to(noise.device)
    x = noise
    for i in range(num_steps):
        t = times[i].expand(x.shape[0])  # (B,)
        v = guided_velocity(velocity, x, t, guidance_scale)
        x = x + (times[i + 1] - times[i]) * v
        if on_step is not None:
            on_step(i + 1)
    return x
