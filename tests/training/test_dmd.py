"""training/dmd.py: the student it trains is sampled as the engine samples it, its gradient is DMD's, and
the stage moves the student, leaves the teacher alone and is deterministic by seed; the GAN term's head
learns real from fake and its loss moves the student's latents toward what the head calls real."""

from __future__ import annotations

import copy

import pytest
import torch

from reelforge.engine.dit import DiTConfig, VideoDiT
from reelforge.engine.sampler import flow_timesteps, sample
from reelforge.training.dmd import (
    DMDConfig,
    RealFakeHead,
    _Tap,
    critic_loss,
    dmd_loss,
    fooling_loss,
    head_losses,
    student_x0,
)

CONFIG = DiTConfig(hidden=32, depth=2, heads=2, text_len=6)
SHAPE = (3, CONFIG.latent_channels, 2, 4, 4)  # (B, Z, T', H', W')


def _model(seed: int) -> VideoDiT:
    """A DiT whose AdaLN gates are not zero, so it computes something (as a trained one does)."""
    torch.manual_seed(seed)
    dit = VideoDiT(CONFIG)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return dit.eval()


def _prompt() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    text = torch.randn(SHAPE[0], CONFIG.text_len, CONFIG.text_dim, generator=g)  # (B, L, 384)
    mask = torch.ones(SHAPE[0], CONFIG.text_len, dtype=torch.bool)
    mask[0, 4:] = False
    return text, mask


@pytest.mark.parametrize("renoise", [1.0, 0.5])
def test_the_last_step_predicts_what_the_engines_sampler_returns(renoise: float) -> None:
    student, (text, mask) = _model(0), _prompt()
    times = flow_timesteps(4, 3.0)
    ours = student_x0(student, SHAPE, times, 3, text, mask, renoise, torch.Generator().manual_seed(9), False)
    g = torch.Generator().manual_seed(9)
    noise = torch.randn(SHAPE, generator=g)

    def velocity(x: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
        assert conditional
        v: torch.Tensor = student(x, t, text, mask)
        return v

    with torch.no_grad():
        engine = sample(velocity, noise, 4, 1.0, shift=3.0, renoise=renoise, generator=g)
    torch.testing.assert_close(ours, engine, rtol=1e-5, atol=1e-5)


def test_only_the_trained_step_gets_gradients() -> None:
    student, (text, mask) = _model(0), _prompt()
    times = flow_timesteps(4, 3.0)
    x0 = student_x0(student, SHAPE, times, 2, text, mask, 1.0, torch.Generator().manual_seed(1), True)
    assert x0.requires_grad
    x0.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    frozen = student_x0(student, SHAPE, times, 2, text, mask, 1.0, torch.Generator().manual_seed(1), False)
    assert not frozen.requires_grad
    torch.testing.assert_close(frozen, x0.detach())


def test_a_critic_equal_to_the_unguided_teacher_gives_the_student_nothing_to_learn() -> None:
    teacher, (text, mask) = _model(0), _prompt()
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    loss = dmd_loss(x0, teacher, copy.deepcopy(teacher), text, mask, 1.0, DMDConfig(), torch.Generator())
    loss.backward()
    assert x0.grad is not None and x0.grad.abs().max() < 1e-6


def test_the_gradient_is_the_critics_prediction_minus_the_guided_teachers_normalised_per_clip() -> None:
    teacher, critic, (text, mask) = _model(0), _model(1), _prompt()
    cfg = DMDConfig(t_range=(0.4, 0.6))
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    dmd_loss(x0, teacher, critic, text, mask, 4.0, cfg, torch.Generator().manual_seed(3)).backward()
    g = torch.Generator().manual_seed(3)  # the draws dmd_loss made: tau, then the noise
    tau = 0.4 + 0.2 * torch.rand(SHAPE[0], generator=g)
    noise = torch.randn(SHAPE, generator=g)
    tv = tau.view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        x_tau = (1 - tv) * x0 + tv * noise
        null = teacher.null_prompt(SHAPE[0])
        v_c, v_u = teacher(x_tau, tau, text, mask), teacher(x_tau, tau, *null)
        real = x_tau - tv * (v_u + 4.0 * (v_c - v_u))
        fake = x_tau - tv * critic(x_tau, tau, text, mask)
        scale = (x0 - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    expected = (fake - real) / scale / x0.numel()  # the loss is a mean over every element
    assert x0.grad is not None
    torch.testing.assert_close(x0.grad, expected, rtol=1e-4, atol=1e-9)
    assert expected.abs().max() > 0


def test_the_critic_learns_from_the_students_outputs_without_moving_them() -> None:
    critic, (text, mask) = _model(1), _prompt()
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    loss = critic_loss(critic, x0, text, mask, DMDConfig(), torch.Generator().manual_seed(4))
    loss.backward()
    assert x0.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())


def test_the_teacher_is_guided_with_the_rescale_the_students_were_distilled_at() -> None:
    teacher, critic, (text, mask) = _model(0), _model(1), _prompt()
    grads = []
    for rescale in (0.0, 0.7):
        x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        g = torch.Generator().manual_seed(3)
        dmd_loss(x0, teacher, critic, text, mask, 4.0, DMDConfig(), g, guidance_rescale=rescale).backward()
        grads.append(x0.grad)
    assert grads[0] is not None and grads[1] is not None
    assert not torch.allclose(grads[0], grads[1])


def _head(seed: int) -> RealFakeHead:
    torch.manual_seed(seed)
    return RealFakeHead(CONFIG.hidden)


def test_the_head_learns_to_tell_real_latents_from_the_students() -> None:
    critic, head, (text, mask) = _model(1), _head(0), _prompt()
    tap, cfg, g = _Tap(critic, 0), DMDConfig(t_range=(0.02, 0.2)), torch.Generator().manual_seed(3)
    fake = torch.randn(SHAPE, generator=g)
    real = 1.0 + 0.2 * torch.randn(SHAPE, generator=g)  # another distribution than the student's
    optim = torch.optim.Adam([*critic.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(40):
        critic_loss(critic, fake, text, mask, cfg, g)  # the critic's forward on the fake batch fills the tap
        fake_loss, real_loss = head_losses(critic, head, tap, (real, text, mask), cfg, g)
        optim.zero_grad()
        (fake_loss + real_loss).backward()
        optim.step()
        losses.append((fake_loss + real_loss).item())
    assert losses[0] > 1.0 and losses[-1] < 0.2  # from about 2 log 2 (chance) to a sure classifier
    with pytest.raises(RuntimeError, match="has not run"):  # no fake tokens since the last take
        head_losses(critic, head, tap, (real, text, mask), cfg, g)


def test_the_head_reads_the_block_it_is_given() -> None:
    critic, head, (text, mask) = _model(1), _head(0), _prompt()
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    tap = _Tap(critic, 0)

    def loss() -> torch.Tensor:
        return fooling_loss(critic, head, tap, x0, text, mask, DMDConfig(), torch.Generator().manual_seed(4))

    before = loss()
    with torch.no_grad():
        for p in critic.blocks[1].parameters():
            p.add_(1.0)
    torch.testing.assert_close(loss(), before)  # block 1 comes after what the head reads
    with torch.no_grad():
        for p in critic.blocks[0].parameters():
            p.add_(1.0)
    assert not torch.allclose(loss(), before)
    with pytest.raises(ValueError, match="gan_block 2"):
        _Tap(critic, CONFIG.depth)


def test_the_students_gan_loss_moves_its_latents_toward_what_the_head_calls_real() -> None:
    critic, head, (text, mask) = _model(1), _head(0), _prompt()
    tap = _Tap(critic, 1)
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)).requires_grad_(True)

    def loss(x: torch.Tensor) -> torch.Tensor:  # the same tau and noise each call
        return fooling_loss(critic, head, tap, x, text, mask, DMDConfig(), torch.Generator().manual_seed(4))

    first = loss(x0)
    first.backward()
    assert x0.grad is not None and x0.grad.abs().max() > 0
    with torch.no_grad():
        assert loss(x0 - 10.0 * x0.grad) < first  # one step down the gradient: the head calls it more real
