"""Stage 3b (optional): distribution matching distillation of one few-step student, after the rounds.

Method: DMD (Yin et al., CVPR 2024, "One-step Diffusion with Distribution Matching Distillation",
arXiv:2311.18828) as DMD2 runs it (Yin et al., NeurIPS 2024, "Improved Distribution Matching
Distillation for Fast Image Synthesis", arXiv:2405.14867); its GAN term is optional (`gan_weight`):
- the student is a multi-step generator sampled as the engine samples it: at each of its steps it predicts
  a clean latent, which is noised again to the next step's time with fresh noise (ancestral sampling,
  engine/sampler.sample with renoise 1). Training runs DMD2's backward simulation: draw one of the
  student's steps, run the student up to it without gradients, and train the clean latent that step
  predicts;
- that latent x0 is noised to a random time tau and scored by two denoisers: the guided teacher (the
  "real" score, guidance folded into the target as in the progressive rounds) and a critic (the "fake"
  score: a copy of the teacher trained with the flow-matching loss on the student's own outputs, so it
  tracks the student's distribution). The student's gradient is the difference of their clean-latent
  predictions, normalised per clip by the mean distance of x0 from the real one (DMD, eq. 8), which moves
  the student's outputs toward where the guided teacher puts its mass and away from where the student
  alone does;
- DMD2's two time-scale update rule: the critic takes `critic_updates` steps for every student step, and
  `critic_warmup` steps before the first;
- DMD2's GAN term, when `gan_weight` > 0: a small head on the critic's token states halfway through it (where
  DMD2 reads its UNet's bottleneck) classifies noised latents as real (the training clips, VAE-encoded) or
  the student's. The head and the critic learn it with `gan_critic_weight` times the non-saturating
  classification loss beside the critic's flow-matching loss; the student gets `gan_weight` times the
  non-saturating generator loss through the critic, so it learns from real clips and not only from the
  teacher's score (DMD2, section 4.3).

The regression loss of DMD (paired noise -> teacher outputs) is left out, as DMD2 does: the student starts
as the progressive rounds' student, which already maps noise to the teacher's samples.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reelforge.engine.dit import VideoDiT
from reelforge.engine.sampler import flow_timesteps, guided_velocity
from reelforge.engine.vae import VideoVAE
from reelforge.training.clips import TWO_OBJECT_FRACTION
from reelforge.training.distill import _velocity
from reelforge.training.train_dit import LatentDataset, build_dataset, sample_batch
from reelforge.training.train_vae import Log, OptimConfig, fit


@dataclass(frozen=True)
class DMDConfig:
    student_steps: int = 4  # the student fine-tuned: the one requests get by default
    # Student updates. 100 at lr 1e-4 with 4 critic updates each scored best of the four settings tried on
    # the shipped student@4 (200 held-out prompts: shape 62 -> 66 %, direction 80.5 -> 84 %, Frechet 1.17 ->
    # 1.05), in 475 s on 2 CPU cores (docs/model.md, section 28).
    optim: OptimConfig = OptimConfig(steps=100, lr=1e-4, warmup=10, log_every=10)
    critic_lr: float = 1e-4
    # Critic (fake-score) updates per student update: DMD2's two time-scale rule (it uses 5). At 2, with
    # 150 student updates in the same time, shape rose as far but the Frechet distance worsened to 1.35.
    critic_updates: int = 4
    critic_warmup: int = 50  # critic updates before the student's first: it starts as the teacher
    batch: int = 16
    clips: int = 1024  # their captions; their latents only as the GAN term's real clips
    # Share of those clips (and so of the captions the student is trained on) with two objects; the
    # teacher's data has clips.TWO_OBJECT_FRACTION.
    two_object_fraction: float = TWO_OBJECT_FRACTION
    t_range: tuple[float, float] = (0.02, 0.98)  # tau, where the two scores are compared (DMD2's)
    # DMD2's GAN term, off in the shipped recipe: the student's weight (DMD2: 3e-3 on ImageNet, 5e-3 on
    # SDXL), the critic's (DMD2: 1e-2), and the block whose output the real/fake head reads (1 of 0..3: the
    # middle of the shipped four-block critic). In 100 student updates it changed nothing measurable at
    # DMD2's weights or at 0.1, and cost 1.6x the stage's time; with a head that did learn (lr 1e-3, critic
    # weight 0.1) it cost 8 points of shape (docs/model.md, section 29).
    gan_weight: float = 0.0
    gan_critic_weight: float = 1e-2
    gan_block: int = 1
    gan_head_lr: float | None = None  # the head's learning rate (None: critic_lr, as DMD2)


DMD_PRESETS = {
    "default": DMDConfig(),
    "tiny": DMDConfig(
        student_steps=4,
        optim=OptimConfig(steps=3, lr=1e-4, warmup=1, log_every=1),
        critic_updates=1,
        critic_warmup=2,
        batch=4,
        clips=16,
    ),
}


def student_x0(
    student: VideoDiT,
    shape: tuple[int, ...],
    times: torch.Tensor,
    k: int,
    text: torch.Tensor,
    mask: torch.Tensor,
    renoise: float,
    generator: torch.Generator,
    grad: bool,
) -> torch.Tensor:
    """(B, Z, T', H', W'): the clean latent the student predicts at its step k (0-based), after its steps
    0..k-1 from noise of `shape` (B, Z, T', H', W') as the engine's sampler runs them (renoise eta; its
    draws: the start noise, then one fresh noise per step); gradients through step k only when `grad`."""
    b = shape[0]
    x = torch.randn(shape, generator=generator).to(text.device)  # (B, Z, T', H', W')
    with torch.no_grad():
        for i in range(k):
            t, t_next = times[i], times[i + 1]
            v = student(x, t.expand(b), text, mask)
            x0, eps = x - t * v, x + (1 - t) * v
            fresh = torch.randn(x.shape, generator=generator).to(x.device)
            x = (1 - t_next) * x0 + t_next * ((1 - renoise**2) ** 0.5 * eps + renoise * fresh)
    with torch.set_grad_enabled(grad):
        return x - times[k] * student(x, times[k].expand(b), text, mask)


def _noised(
    x0: torch.Tensor, t_range: tuple[float, float], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_tau, tau (B,), the noise) for tau uniform in t_range."""
    low, high = t_range
    tau = low + (high - low) * torch.rand(x0.shape[0], generator=generator)  # (B,)
    noise = torch.randn(x0.shape, generator=generator)
    tau, noise = tau.to(x0.device), noise.to(x0.device)
    tv = tau.view(-1, 1, 1, 1, 1)
    return (1 - tv) * x0 + tv * noise, tau, noise


class RealFakeHead(nn.Module):
    """DMD2's classifier on the critic's token states: (B, N, D) -> one real-vs-student logit (B,)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU())
        self.out = nn.Linear(hidden, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(tokens).mean(dim=1)).squeeze(-1)  # (B, N, D) -> (B, D) -> (B,)


class _Tap:
    """Keeps the output of one critic block (B, N, D) from each forward of the critic."""

    def __init__(self, critic: VideoDiT, block: int) -> None:
        if not 0 <= block < len(critic.blocks):
            raise ValueError(
                f"gan_block {block} must be one of the critic's blocks 0..{len(critic.blocks) - 1}"
            )
        self.tokens: torch.Tensor | None = None
        critic.blocks[block].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.tokens = output

    def take(self) -> torch.Tensor:
        tokens, self.tokens = self.tokens, None
        if tokens is None:
            raise RuntimeError("the critic has not run since the last take")
        return tokens


def critic_loss(
    critic: VideoDiT,
    x0: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    cfg: DMDConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """The flow-matching loss of the critic on the student's clean latents x0 (no gradient into them)."""
    x_tau, tau, noise = _noised(x0.detach(), cfg.t_range, generator)
    return F.mse_loss(critic(x_tau, tau, text, mask), noise - x0.detach())


def head_losses(
    critic: VideoDiT,
    head: RealFakeHead,
    tap: _Tap,
    real: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cfg: DMDConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's non-saturating classification losses (softplus(D(fake)) mean, softplus(-D(real)) mean).
    The fake tokens are the tap's from the critic's last forward (critic_loss's, on the student's noised
    latents); real is a (latent, text, mask) batch of training clips, noised here to a random tau."""
    fake_loss = F.softplus(head(tap.take())).mean()
    x0, text, mask = real
    x_tau, tau, _ = _noised(x0, cfg.t_range, generator)
    critic(x_tau, tau, text, mask)
    return fake_loss, F.softplus(-head(tap.take())).mean()


def fooling_loss(
    critic: VideoDiT,
    head: RealFakeHead,
    tap: _Tap,
    x0: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    cfg: DMDConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """The student's GAN loss on its x0 (B, Z, T', H', W'), noised to a random tau: softplus(-D) mean,
    low when the head calls its clips real (DMD2's non-saturating generator loss). Its gradient reaches x0
    through the critic; the caller keeps the critic's parameters out of it."""
    x_tau, tau, _ = _noised(x0, cfg.t_range, generator)
    critic(x_tau, tau, text, mask)
    return F.softplus(-head(tap.take())).mean()


def dmd_loss(
    x0: torch.Tensor,
    teacher: VideoDiT,
    critic: VideoDiT,
    text: torch.Tensor,
    mask: torch.Tensor,
    guidance_scale: float,
    cfg: DMDConfig,
    generator: torch.Generator,
    guidance_rescale: float = 0.0,
) -> torch.Tensor:
    """DMD's loss on the student's x0 (B, Z, T', H', W'): its gradient with respect to x0 is the critic's
    clean-latent prediction minus the guided teacher's at x0 noised to tau, divided per clip by the mean
    |x0 - the teacher's prediction|. The teacher is guided as in the distillation (guidance_rescale: phi
    of engine/sampler.guided_velocity)."""
    with torch.no_grad():
        x_tau, tau, _ = _noised(x0, cfg.t_range, generator)
        tv = tau.view(-1, 1, 1, 1, 1)
        velocity = _velocity(teacher, text, mask)
        real = x_tau - tv * guided_velocity(velocity, x_tau, tau, guidance_scale, guidance_rescale)
        fake = x_tau - tv * critic(x_tau, tau, text, mask)
        scale = (x0 - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-4)  # (B, 1, 1, 1, 1)
        step = (fake - real) / scale
    return 0.5 * F.mse_loss(x0, (x0 - step).detach())


def dmd(
    cfg: DMDConfig,
    student: VideoDiT,
    teacher: VideoDiT,
    vae: VideoVAE,
    guidance_scale: float,
    flow_shift: float,
    renoise: float,
    seed: int,
    log: Log,
    guidance_rescale: float = 0.0,
) -> tuple[VideoDiT, dict[str, Any]]:
    """The fine-tuned student and the manifest entry. guidance_scale, flow_shift, guidance_rescale and
    renoise are the ones the student was distilled at and is sampled with (the weights folder's)."""
    if not 0 <= cfg.t_range[0] < cfg.t_range[1] <= 1:
        raise ValueError(f"t_range {cfg.t_range} must be two increasing times in [0, 1]")
    data: LatentDataset = build_dataset(vae, cfg.clips, seed, two_object_fraction=cfg.two_object_fraction)
    generator = torch.Generator().manual_seed(seed)
    times = flow_timesteps(cfg.student_steps, flow_shift).to(data.latents.device)
    shape = (cfg.batch, *data.latents.shape[1:])  # (B, Z, T', H', W')
    teacher = teacher.eval().requires_grad_(False)
    student = copy.deepcopy(student).requires_grad_(True)
    student.null_text.requires_grad_(False)  # the student runs on the prompt only
    critic = copy.deepcopy(teacher).requires_grad_(True)
    critic.null_text.requires_grad_(False)
    critic_params = [p for p in critic.parameters() if p.requires_grad]
    gan: tuple[RealFakeHead, _Tap] | None = None  # DMD2's GAN term: the head and where it reads the critic
    groups: list[dict[str, Any]] = [{"params": critic_params}]
    if cfg.gan_weight > 0:
        with torch.random.fork_rng(devices=[]):  # the head's initialisation, by seed
            torch.manual_seed(seed)
            gan = RealFakeHead(critic.config.hidden).to(data.latents.device), _Tap(critic, cfg.gan_block)
        groups.append({"params": list(gan[0].parameters()), "lr": cfg.gan_head_lr or cfg.critic_lr})
    critic_optim = torch.optim.AdamW(groups, lr=cfg.critic_lr, betas=(0.9, 0.99), weight_decay=0.0)
    trained = [p for group in groups for p in group["params"]]  # the critic's and the head's
    critic_losses: list[float] = []
    gan_log: list[tuple[float, float, float]] = []  # per critic update: fake, real loss; student's term

    def prompts() -> tuple[torch.Tensor, torch.Tensor]:
        _, text, mask = sample_batch(data, cfg.batch, generator)  # (B, L, 384), (B, L)
        return text, mask

    def update_critic() -> None:
        text, mask = prompts()
        k = int(torch.randint(cfg.student_steps, (1,), generator=generator))
        x0 = student_x0(student, shape, times, k, text, mask, renoise, generator, grad=False)
        loss = critic_loss(critic, x0, text, mask, cfg, generator)
        critic_losses.append(loss.item())
        if gan is not None:
            real = sample_batch(data, cfg.batch, generator)  # VAE-encoded training clips, their captions
            fake_loss, real_loss = head_losses(critic, *gan, real, cfg, generator)
            loss = loss + cfg.gan_critic_weight * (fake_loss + real_loss)
            gan_log.append((fake_loss.item(), real_loss.item(), float("nan")))
        critic_optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        critic_optim.step()

    start = time.perf_counter()
    for _ in range(cfg.critic_warmup):
        update_critic()
    if critic_losses:
        log(f"[dmd] critic warm-up: {cfg.critic_warmup} steps, last loss {critic_losses[-1]:.4f}")

    def loss_at(step: int) -> torch.Tensor:
        for _ in range(cfg.critic_updates):
            update_critic()
        text, mask = prompts()
        k = int(torch.randint(cfg.student_steps, (1,), generator=generator))
        x0 = student_x0(student, shape, times, k, text, mask, renoise, generator, grad=True)
        loss = dmd_loss(x0, teacher, critic, text, mask, guidance_scale, cfg, generator, guidance_rescale)
        if gan is None:
            return loss
        for p in trained:  # the graph built now reaches x0 through the critic, not the critic itself
            p.requires_grad_(False)
        fooled = fooling_loss(critic, *gan, x0, text, mask, cfg, generator)
        for p in trained:
            p.requires_grad_(True)
        gan_log[-1] = (*gan_log[-1][:2], fooled.item())
        return loss + cfg.gan_weight * fooled

    result = fit(student, loss_at, cfg.optim, log, f"dmd {cfg.student_steps}-step")
    window = max(1, cfg.optim.log_every * cfg.critic_updates)
    entry = {
        "method": "distribution matching distillation (Yin et al. 2024, DMD2"
        + (" with its GAN term)" if gan is not None else " without its GAN term)"),
        "student_steps": cfg.student_steps,
        "data_seed": seed,
        "steps": cfg.optim.steps,
        "lr": cfg.optim.lr,
        "critic_lr": cfg.critic_lr,
        "critic_updates": cfg.critic_updates,
        "critic_warmup": cfg.critic_warmup,
        "batch": cfg.batch,
        "clips": cfg.clips,
        "two_object_fraction": cfg.two_object_fraction,
        "t_range": list(cfg.t_range),
        "guidance_scale": guidance_scale,
        **({"guidance_rescale": guidance_rescale} if guidance_rescale else {}),
        "renoise": renoise,
        "seconds": round(time.perf_counter() - start, 1),
        "seconds_per_step": round(result.seconds_per_step, 4),
        "losses": result.losses,
        "critic_losses": _means(critic_losses, window),
    }
    if gan is not None:  # absent from the shipped record, made without it
        entry["gan"] = {
            "weight": cfg.gan_weight,
            "critic_weight": cfg.gan_critic_weight,
            "block": cfg.gan_block,
            "head_lr": cfg.gan_head_lr or cfg.critic_lr,
            "head_fake_losses": _means([f for f, _, _ in gan_log], window),
            "head_real_losses": _means([r for _, r, _ in gan_log], window),
            "student_losses": _means([g for _, _, g in gan_log if not math.isnan(g)], cfg.optim.log_every),
        }
    return result.model.eval().requires_grad_(False), entry  # type: ignore[return-value]


def _means(values: list[float], window: int) -> list[float]:
    """Means of consecutive windows of values, rounded for the manifest."""
    return [
        round(sum(values[i : i + window]) / len(values[i : i + window]), 5)
        for i in range(0, len(values), window)
    ]
