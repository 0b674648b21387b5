"""Euler flow-matching sampler: the time grid, exactness on straight paths, and guidance."""

from __future__ import annotations

import torch

from reelforge.engine.sampler import flow_timesteps, sample


def test_timesteps_run_from_one_to_zero() -> None:
    for shift in (1.0, 3.0):
        t = flow_timesteps(4, shift)
        assert t.shape == (5,) and t[0] == 1.0 and t[-1] == 0.0
        assert bool((t[1:] < t[:-1]).all())
    assert bool((flow_timesteps(4, 3.0)[1:-1] > flow_timesteps(4, 1.0)[1:-1]).all())


def test_exact_velocity_recovers_the_data_in_any_number_of_steps() -> None:
    x0, noise = torch.randn(1, 8, 2, 4, 4), torch.randn(1, 8, 2, 4, 4)
    for steps in (1, 4):
        out = sample(lambda x, t, cond: noise - x0, noise, steps, guidance_scale=1.0)
        torch.testing.assert_close(out, x0)


def test_guidance_extrapolates_from_unconditional_and_reports_each_step() -> None:
    seen: list[int] = []
    noise = torch.zeros(1, 1, 1, 1, 1)
    out = sample(
        lambda x, t, cond: torch.full_like(x, 2.0 if cond else 1.0), noise, 2, 3.0, on_step=seen.append
    )
    # v = 1 + 3 * (2 - 1) = 4 for a total time of -1
    torch.testing.assert_close(out, torch.full_like(noise, -4.0))
    assert seen == [1, 2]
