"""Euler flow-matching sampler: the time grid, exactness on straight paths, and guidance."""

from __future__ import annotations

import pytest
import torch

from reelforge.engine.sampler import flow_timesteps, guided_velocity, sample


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


def test_rescaled_guidance_blends_back_toward_the_conditional_spread() -> None:
    torch.manual_seed(0)
    v_cond, v_uncond = torch.randn(2, 4, 2, 3, 3), 0.3 * torch.randn(2, 4, 2, 3, 3)

    def velocity(x: torch.Tensor, t: torch.Tensor, cond: bool) -> torch.Tensor:
        return v_cond if cond else v_uncond

    x, t = torch.zeros(2, 4, 2, 3, 3), torch.ones(2)
    guided = guided_velocity(velocity, x, t, 4.0)
    torch.testing.assert_close(guided, v_uncond + 4.0 * (v_cond - v_uncond))
    torch.testing.assert_close(guided_velocity(velocity, x, t, 4.0, rescale=0.0), guided)
    # phi = 1: the guided direction at each sample's conditional standard deviation, which guidance
    # inflated; phi = 0.7 lands 70 % of the way there.
    full = guided_velocity(velocity, x, t, 4.0, rescale=1.0)
    dims = [1, 2, 3, 4]
    torch.testing.assert_close(full.std(dim=dims), v_cond.std(dim=dims))
    assert bool((guided.std(dim=dims) > 1.5 * v_cond.std(dim=dims)).all())

    def unit(v: torch.Tensor) -> torch.Tensor:
        return v / torch.linalg.vector_norm(v, dim=dims, keepdim=True)

    torch.testing.assert_close(unit(full), unit(guided))
    torch.testing.assert_close(guided_velocity(velocity, x, t, 4.0, rescale=0.7), 0.7 * full + 0.3 * guided)
    # Without guidance there is nothing to rescale: the conditional pass alone, as students run.
    torch.testing.assert_close(guided_velocity(velocity, x, t, 1.0, rescale=0.7), v_cond)
    noise = torch.randn(2, 4, 2, 3, 3)
    plain = sample(lambda x, t, cond: velocity(x, t, cond), noise, 2, 4.0)
    assert not torch.allclose(sample(velocity, noise, 2, 4.0, guidance_rescale=0.7), plain)


def test_ancestral_sampling_draws_its_fresh_noise_from_the_generator() -> None:
    x0, noise = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)

    def towards_x0(x: torch.Tensor, t: torch.Tensor, cond: bool) -> torch.Tensor:
        return (x - x0) / t.view(-1, 1, 1, 1, 1)  # the exact field of data that is x0 alone

    seen: list[torch.Tensor] = []

    def recording(x: torch.Tensor, t: torch.Tensor, cond: bool) -> torch.Tensor:
        seen.append(x.clone())
        return towards_x0(x, t, cond)

    def run(seed: int, eta: float) -> torch.Tensor:
        seen.clear()
        out = sample(
            recording, noise, 4, 1.0, shift=3.0, renoise=eta, generator=torch.Generator().manual_seed(seed)
        )
        torch.testing.assert_close(out, x0)  # re-noising a perfect x0 still lands on it
        return torch.stack(seen)

    deterministic = run(0, 0.0)
    ancestral = run(0, 1.0)
    assert torch.equal(ancestral, run(0, 1.0))  # one seed, one trajectory
    assert not torch.allclose(ancestral[1:], run(1, 1.0)[1:])  # its noise comes from the generator
    assert not torch.allclose(ancestral[1:], deterministic[1:])
    torch.testing.assert_close(ancestral[0], deterministic[0])
    # eta 1 keeps none of the step's own noise estimate: the state is x0 plus fresh noise only.
    times = flow_timesteps(4, 3.0)
    fresh = (ancestral[1] - (1 - times[1]) * x0) / times[1]
    assert abs(float(fresh.std()) - 1.0) < 0.5 and not torch.allclose(fresh, noise)
    with pytest.raises(ValueError, match="generator"):
        sample(towards_x0, noise, 4, 1.0, renoise=0.5)
