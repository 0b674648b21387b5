"""Euler sampler for rectified flow, with classifier-free guidance. Pure: no model, no state.

Convention: x_t = (1 - t) * x_0 + t * noise, the model predicts v = noise - x_0, and sampling walks
t from 1 (noise) to 0 (data) with x <- x + (t_next - t) * v.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
"""velocity(x, t, conditional) -> v: the model with the prompt (True) or the negative/null prompt."""


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's time shift (Esser et al. 2024): t' = s t / (1 + (s - 1) t), monotone on [0, 1] with the
    ends fixed; s > 1 moves every t toward 1 (more noise)."""
    return shift * t / (1 + (shift - 1) * t)


def flow_timesteps(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """num_steps + 1 times from 1 to 0. shift > 1 spends more steps at high noise, where the layout of
    the clip is decided (`shift_time`)."""
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return shift_time(t, shift).float()


def guided_velocity(
    velocity: Velocity, x: torch.Tensor, t: torch.Tensor, guidance_scale: float, rescale: float = 0.0
) -> torch.Tensor:
    """v_uncond + g * (v_cond - v_uncond); at g <= 1 only the conditional pass runs, which is also how
    a distilled student with guidance folded into its weights is sampled.

    rescale (phi in Lin et al., WACV 2024, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed", section 3.4; diffusers' guidance_rescale) blends the guided velocity with itself scaled
    back to the conditional velocity's standard deviation per sample: guidance inflates it, which
    here draws objects larger than the data's (docs/model.md, section 10)."""
    v_cond = velocity(x, t, True)
    if guidance_scale <= 1.0:
        return v_cond
    v_uncond = velocity(x, t, False)
    guided = v_uncond + guidance_scale * (v_cond - v_uncond)  # (B, ...)
    if rescale <= 0.0:
        return guided
    dims = list(range(1, guided.ndim))
    rescaled = guided * (v_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * guided


def sample(
    velocity: Velocity,
    noise: torch.Tensor,
    num_steps: int,
    guidance_scale: float,
    shift: float = 1.0,
    on_step: Callable[[int], None] | None = None,
    guidance_rescale: float = 0.0,
    renoise: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integrate from noise (t = 1) to a clean latent (t = 0); on_step(i) after step i = 1..num_steps.
    Whatever on_step raises propagates, which is how a caller stops a run between steps.
    guidance_rescale: phi of guided_velocity, used only where guidance_scale > 1.

    renoise (eta): an Euler step is x' = (1 - t') x0 + t' eps with the model's x0 = x - t v and
    eps = x + (1 - t) v; eta > 0 swaps eps for sqrt(1 - eta^2) eps + eta z, z fresh noise drawn from
    `generator` (CPU), in every step but the last: ancestral sampling, as consistency models and
    few-step distilled students are sampled (Song et al. 2023, multistep sampling; SDXL-Turbo's Euler
    ancestral). 0: the deterministic Euler sampler, the teacher's, which progressive distillation
    follows."""
    times = flow_timesteps(num_steps, shift).to(noise.device)
    if renoise > 0.0 and generator is None:
        raise ValueError("renoise > 0 needs a generator for the fresh noise, so a seed means one clip")
    x = noise
    for i in range(num_steps):
        t, t_next = times[i], times[i + 1]
        v = guided_velocity(velocity, x, t.expand(x.shape[0]), guidance_scale, guidance_rescale)
        if renoise > 0.0 and t_next > 0:
            x0, eps = x - t * v, x + (1 - t) * v  # the step's clean latent and noise
            z = torch.randn(x.shape, generator=generator).to(x.device)
            x = (1 - t_next) * x0 + t_next * ((1 - renoise**2) ** 0.5 * eps + renoise * z)
        else:
            x = x + (t_next - t) * v
        if on_step is not None:
            on_step(i + 1)
    return x
