"""Stage 3: few-step students with classifier-free guidance folded in, by progressive distillation.

Method: the two stages of Meng et al. (CVPR 2023, "On Distillation of Guided Diffusion Models",
arXiv:2210.03142) at one fixed guidance scale, so the student needs no guidance-scale input:
1. guidance folding: a copy of the teacher learns to output, in one conditional pass, the guided
   velocity v_uncond + w (v_cond - v_uncond) of the teacher's two passes, at any t;
2. progressive distillation (Salimans & Ho, ICLR 2022, "Progressive Distillation for Fast Sampling of
   Diffusion Models", arXiv:2202.00512) of that folded model, halving the step count each round.
With fold_optim None (the default), stage 1 is skipped and the first halving round learns from the
guided teacher directly, folding the guidance as it halves the steps.

In the sampler's rectified-flow terms: each round halves the number of Euler steps. A student starts as
a copy of its round's teacher and learns to cover in one Euler step from t to t - 2d what the teacher
covers in two steps of d: for x_t on the student's time grid (training latents, forward-noised), the
target velocity is (x_t - x_{t-2d}) / 2d, with x_{t-2d} from the teacher's two steps. Teachers after
the guidance stage run on the prompt alone, since the guidance is already in their weights. Each round
costs a few hundred steps of three to five DiT passes per example, and needs no full trajectories,
which is what makes it the cheap choice on a CPU (reflow would first sample thousands of 50-step
guided trajectories).

The students keep the teacher's architecture and run with the engine's unchanged Euler sampler at
guidance_scale 1 (conditional pass only).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from reelforge.engine.dit import VideoDiT
from reelforge.engine.sampler import flow_timesteps, guided_velocity
from reelforge.engine.vae import VideoVAE
from reelforge.training.clips import TWO_OBJECT_FRACTION
from reelforge.training.train_dit import LatentDataset, build_dataset, sample_batch
from reelforge.training.train_vae import FitResult, Log, OptimConfig, fit


@dataclass(frozen=True)
class DistillConfig:
    # Round 1 halves 32 guided Euler steps. It started from 16 for the first shipped set, whose students
    # then matched the 16-step teacher (64 held-out prompts: direction 67 vs 69 %) and so sat 9-14
    # points below teacher@50, the eval table's reference; the guided teacher at 32 steps is within ~3
    # points of 50 (docs/model.md, section 5). The extra round costs ~300 s.
    teacher_steps: int = 32
    # SD3's time shift of every sampling grid (engine/sampler.flow_timesteps): the students are distilled on
    # the shifted grid and the engine samples the teacher with it too (the manifest records it). At 3, the
    # 4-step grid is 1, 0.9, 0.75, 0.5, 0: more of the steps where the layout and motion are decided. On 96
    # held-out prompts the guided teacher@50's direction rose 76.0 -> 81.2 % (guidance 4) and 77.1 ->
    # 80.2 % (guidance 6) at equal colour (docs/model.md, section 8).
    flow_shift: float = 3.0
    keep_steps: tuple[int, ...] = (4, 2, 1)  # students written out; rounds run down to the smallest
    guidance_scale: float = 4.0  # folded into the students; the eval samples the teacher at the same
    # phi of rescaled guidance (engine/sampler.guided_velocity): the guided teacher's velocity, blended
    # back toward its conditional spread, is what the students learn; the engine samples the folder's
    # guided teacher with it too (the manifest records it). 0: plain classifier-free guidance.
    guidance_rescale: float = 0.0
    # lr 2e-4: after 150 steps of round 1 its loss was 0.143 against 0.168 at 5e-5 (about where 300 steps
    # at 5e-5 had ended, 0.141), and at 5e-5 every round's loss was still falling when it stopped
    # (docs/model.md, section 5).
    optim: OptimConfig = OptimConfig(steps=400, lr=2e-4, warmup=20, ema_decay=0.99, log_every=25)  # per round
    # Steps of the first halving round alone (None: optim.steps); it folds the guidance in unless
    # fold_optim runs first. Its loss is 1.7-6.4x the later rounds' and was still falling when 400 steps
    # ran out; 800 lowered it 10 % but moved no student's score beyond the eval's noise, for 8.7 more
    # minutes (docs/model.md, section 24).
    first_round_steps: int | None = None
    # Meng et al.'s separate stage 1 (guidance folding) before the rounds; None: the first halving round
    # folds the guidance itself. Off by default: 600 folding steps (+149 s in all) moved student@4 by -0.5 /
    # -2.5 / +3 points (colour / shape / direction, within the eval's noise) and cost student@1 3.5
    # points of colour (docs/model.md, section 6).
    fold_optim: OptimConfig | None = None
    batch: int = 16
    clips: int = 2048  # fewer than the teacher saw: a student only has to follow its teacher
    # Share of the distillation clips (and so of its captions) with two objects; the teacher's data has
    # clips.TWO_OBJECT_FRACTION.
    two_object_fraction: float = TWO_OBJECT_FRACTION
    reading_order: bool = False  # as the teacher's data (DiTTrainConfig.reading_order)


DISTILL_PRESETS = {
    "default": DistillConfig(),
    "tiny": DistillConfig(
        teacher_steps=8,
        optim=OptimConfig(steps=16, lr=1e-3, warmup=2, ema_decay=0.5, log_every=4),
        batch=8,
        clips=32,
    ),
}

Velocity = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def _velocity(dit: VideoDiT, text: torch.Tensor, mask: torch.Tensor) -> Velocity:
    null = dit.null_prompt(text.shape[0])

    def velocity(x: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
        v: torch.Tensor = dit(x, t, *((text, mask) if conditional else null))  # (B, Z, T', H', W')
        return v

    return velocity


def _noised(x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t noise for t (B, 1, 1, 1, 1), the noise from the CPU generator."""
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    return (1 - t) * x0 + t * noise


def round_loss(
    student: VideoDiT,
    teacher: VideoDiT,
    guidance_scale: float,
    student_steps: int,
    data: LatentDataset,
    batch: int,
    generator: torch.Generator,
    flow_shift: float,
    guidance_rescale: float,
) -> torch.Tensor:
    x0, text, mask = sample_batch(data, batch, generator)  # (B, Z, T', H', W'), (B, L, 384), (B, L)
    times = flow_timesteps(2 * student_steps, flow_shift).to(x0.device)  # teacher grid; the student's
    # is every other one
    i = 2 * torch.randint(student_steps, (batch,), generator=generator).to(x0.device)  # (B,) step starts
    t, t_mid, t_next = (times[i + k].view(-1, 1, 1, 1, 1) for k in range(3))  # (B, 1, 1, 1, 1) each
    x_t = _noised(x0, t, generator)  # (B, Z, T', H', W')
    with torch.no_grad():
        velocity = _velocity(teacher, text, mask)
        x_mid = x_t + (t_mid - t) * guided_velocity(
            velocity, x_t, t.flatten(), guidance_scale, guidance_rescale
        )
        x_next = x_mid + (t_next - t_mid) * guided_velocity(
            velocity, x_mid, t_mid.flatten(), guidance_scale, guidance_rescale
        )
        target = (x_next - x_t) / (t_next - t)  # the one-step velocity that lands where two steps did
    return F.mse_loss(student(x_t, t.flatten(), text, mask), target)


def fold_loss(
    student: VideoDiT,
    teacher: VideoDiT,
    guidance_scale: float,
    data: LatentDataset,
    batch: int,
    generator: torch.Generator,
    guidance_rescale: float,
) -> torch.Tensor:
    """Meng et al.'s stage 1: the student's conditional velocity against the teacher's guided one, at
    uniform t in (0, 1], so every later round's grid is covered."""
    x0, text, mask = sample_batch(data, batch, generator)  # (B, Z, T', H', W'), (B, L, 384), (B, L)
    t = 1 - torch.rand(batch, generator=generator).to(x0.device)  # (B,) in (0, 1]
    x_t = _noised(x0, t.view(-1, 1, 1, 1, 1), generator)  # (B, Z, T', H', W')
    with torch.no_grad():
        target = guided_velocity(_velocity(teacher, text, mask), x_t, t, guidance_scale, guidance_rescale)
    return F.mse_loss(student(x_t, t, text, mask), target)


def _student_of(teacher: VideoDiT) -> VideoDiT:
    student = copy.deepcopy(teacher).requires_grad_(True)
    student.null_text.requires_grad_(False)  # students run on the prompt only
    return student


def _distill_round(
    teacher: VideoDiT,
    guidance_scale: float,
    steps: int,
    data: LatentDataset,
    cfg: DistillConfig,
    optim: OptimConfig,
    generator: torch.Generator,
    log: Log,
) -> FitResult:
    """Trains a copy of the teacher to take `steps` Euler steps where the teacher takes 2 * steps, for
    `optim.steps` optimisation steps."""
    student = _student_of(teacher)

    def loss_at(step: int) -> torch.Tensor:
        rescale = cfg.guidance_rescale
        return round_loss(
            student, teacher, guidance_scale, steps, data, cfg.batch, generator, cfg.flow_shift, rescale
        )

    return fit(student, loss_at, optim, log, f"distill {2 * steps}->{steps}")


def distill(
    cfg: DistillConfig, teacher: VideoDiT, vae: VideoVAE, seed: int, log: Log
) -> tuple[dict[int, VideoDiT], dict[str, Any]]:
    """Students by step count (those in cfg.keep_steps) and the manifest entry."""
    reachable = [cfg.teacher_steps >> r for r in range(1, cfg.teacher_steps.bit_length())]
    if cfg.teacher_steps % 2 or not set(cfg.keep_steps) <= set(reachable):
        raise ValueError(f"keep_steps {cfg.keep_steps} must come from halving teacher_steps: {reachable}")
    if cfg.first_round_steps is not None and cfg.first_round_steps < 1:
        raise ValueError(
            f"first_round_steps {cfg.first_round_steps} must be at least 1 (or None: optim.steps)"
        )
    steps = cfg.teacher_steps // 2
    data = build_dataset(
        vae, cfg.clips, seed, two_object_fraction=cfg.two_object_fraction, reading_order=cfg.reading_order
    )
    generator = torch.Generator().manual_seed(seed)
    teacher = teacher.eval().requires_grad_(False)
    guidance = cfg.guidance_scale
    students: dict[int, VideoDiT] = {}
    rounds = []
    folded: dict[str, Any] | None = None
    if cfg.fold_optim is not None:
        student = _student_of(teacher)

        def loss_at(step: int) -> torch.Tensor:
            return fold_loss(student, teacher, guidance, data, cfg.batch, generator, cfg.guidance_rescale)

        result = fit(student, loss_at, cfg.fold_optim, log, "distill guidance")
        folded = {
            "guidance_scale": guidance,
            "steps": cfg.fold_optim.steps,
            "seconds_per_step": round(result.seconds_per_step, 4),
            "losses": result.losses,
        }
        teacher = result.model.eval().requires_grad_(False)  # type: ignore[assignment]
        guidance = 1.0
    while steps >= min(cfg.keep_steps):
        first = not rounds and cfg.first_round_steps is not None
        optim = replace(cfg.optim, steps=cfg.first_round_steps) if first else cfg.optim
        result = _distill_round(teacher, guidance, steps, data, cfg, optim, generator, log)
        rounds.append(
            {
                "teacher_steps": 2 * steps,
                "student_steps": steps,
                "steps": optim.steps,
                "guidance_scale": guidance,
                "seconds_per_step": round(result.seconds_per_step, 4),
                "losses": result.losses,
            }
        )
        teacher = result.model.eval().requires_grad_(False)  # type: ignore[assignment]
        if steps in cfg.keep_steps:
            students[steps] = teacher
        guidance, steps = 1.0, steps // 2  # from here on the guidance is in the teacher's weights
    entry = {
        "method": "guidance folding then progressive distillation (Meng et al. 2023; Salimans & Ho 2022)"
        if folded
        else "progressive distillation (Salimans & Ho 2022) of a guided teacher (Meng et al. 2023)",
        "guidance_fold": folded,
        "data_seed": seed,
        "steps_per_round": cfg.optim.steps,
        "first_round_steps": rounds[0]["steps"],
        "batch": cfg.batch,
        "clips": cfg.clips,
        "two_object_fraction": cfg.two_object_fraction,
        **({"reading_order": True} if cfg.reading_order else {}),
        "guidance_scale": cfg.guidance_scale,
        "guidance_rescale": cfg.guidance_rescale,  # the engine samples the folder's guided teacher with it
        "sample_students_at_guidance": 1.0,
        "flow_shift": cfg.flow_shift,  # the engine samples every DiT of this folder on grids shifted by it
        "rounds": rounds,
    }
    return students, entry
