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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

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
    # Blocks of the students (None: the teacher's depth). Deeper, the first student starts as the teacher
    # with blocks appended that start as the identity (grown(), Net2DeeperNet), so it begins where
    # progressive distillation's copy does, with more capacity for the guided velocity it must fold into
    # one pass; every later round copies it. Each block is 1.1 MB of float16 per student on disk. A fifth
    # block scored student@16 as four do (docs/model.md, section 27).
    student_depth: int | None = None
    # How the first (guided) round draws the student step each clip trains at: "uniform", or "error": in
    # proportion to each step's start error (start_errors(): the two-step target's MSE against what the
    # copied student outputs before training), measured on 4 batches per step before the round. That
    # error is 1.75-1.94 at t 0.955-1, where layout and shape are decided, and 0.18-0.19 from t 0.5 down;
    # drawn by it, student@16's shape fell 61.5 -> 56 % (docs/model.md, section 27). Later rounds draw
    # uniformly.
    first_round_sampling: Literal["uniform", "error"] = "uniform"


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


def draw_steps(
    student_steps: int, batch: int, generator: torch.Generator, step_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """(batch,) student step indices: uniform, or in proportion to step_weights (student_steps,)."""
    if step_weights is None:
        return torch.randint(student_steps, (batch,), generator=generator)
    if step_weights.shape != (student_steps,):
        raise ValueError(
            f"step_weights has shape {tuple(step_weights.shape)}: one per student step, {student_steps}"
        )
    return torch.multinomial(step_weights, batch, replacement=True, generator=generator)


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
    step_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE of the student's one step against the teacher's two, at student steps drawn uniformly or, given
    step_weights (student_steps,), in proportion to them."""
    x0, text, mask = sample_batch(data, batch, generator)  # (B, Z, T', H', W'), (B, L, 384), (B, L)
    k = draw_steps(student_steps, batch, generator, step_weights)  # (B,)
    x_t, t, target = _two_step_target(
        teacher, guidance_scale, student_steps, x0, text, mask, 2 * k.to(x0.device), generator, flow_shift,
        guidance_rescale,
    )  # fmt: skip
    return F.mse_loss(student(x_t, t.flatten(), text, mask), target)


def _two_step_target(
    teacher: VideoDiT,
    guidance_scale: float,
    student_steps: int,
    x0: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    i: torch.Tensor,
    generator: torch.Generator,
    flow_shift: float,
    guidance_rescale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t (B, 1, 1, 1, 1), the one-step velocity that lands where the teacher's two steps from x_t
    do) for x0 noised to the teacher grid's times[i] (i (B,): even indices, the student's step starts)."""
    times = flow_timesteps(2 * student_steps, flow_shift).to(x0.device)  # teacher grid; the student's
    # is every other one
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
    return x_t, t, target


def start_errors(
    teacher: VideoDiT,
    guidance_scale: float,
    student_steps: int,
    data: LatentDataset,
    batch: int,
    seed: int,
    flow_shift: float,
    guidance_rescale: float,
) -> torch.Tensor:
    """(student_steps,): at each student step, the MSE between the two-step target and what a student
    starting as a copy of the teacher outputs (the teacher's conditional velocity), on `batch` clips drawn
    with their own generator from `seed`, so the round's own draws are unchanged."""
    generator = torch.Generator().manual_seed(seed)
    errors = []
    with torch.no_grad():
        for k in range(student_steps):
            x0, text, mask = sample_batch(data, batch, generator)  # (B, Z, T', H', W'), (B, L, 384), (B, L)
            i = torch.full((batch,), 2 * k, device=x0.device)  # (B,)
            x_t, t, target = _two_step_target(
                teacher, guidance_scale, student_steps, x0, text, mask, i, generator, flow_shift,
                guidance_rescale,
            )  # fmt: skip
            errors.append(F.mse_loss(teacher(x_t, t.flatten(), text, mask), target))
    return torch.stack(errors).cpu()


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


def grown(teacher: VideoDiT, depth: int, seed: int) -> VideoDiT:
    """The teacher with depth - teacher.depth blocks appended after its own, computing exactly what the
    teacher does: each new block's AdaLN-Zero modulation (so both gates) and its cross-attention's output
    projection start at zero, so the block adds nothing until trained (Net2DeeperNet: Chen et al., ICLR
    2016, "Net2Net: Accelerating Learning via Knowledge Transfer", arXiv:1511.05641). The new blocks'
    other weights are DiT's initialisation, drawn from `seed`."""
    if depth < teacher.config.depth:
        raise ValueError(f"student depth {depth} is below the teacher's {teacher.config.depth}: choose >= it")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = VideoDiT(replace(teacher.config, depth=depth)).to(teacher.null_text.device)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("blocks.") for k in missing), (missing, unexpected)
    for block in student.blocks[teacher.config.depth :]:
        for layer in (block.adaLN_modulation[-1], block.cross.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
    return student


def _student_of(teacher: VideoDiT, depth: int | None = None, seed: int = 0) -> VideoDiT:
    """A trainable start for the next student: a copy of `teacher`, grown to `depth` blocks if given."""
    student = copy.deepcopy(teacher) if depth is None else grown(teacher, depth, seed)
    student.requires_grad_(True)
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
    depth: int | None = None,
    seed: int = 0,
    step_weights: torch.Tensor | None = None,
) -> FitResult:
    """Trains a copy of the teacher (grown to `depth` blocks if given) to take `steps` Euler steps where
    the teacher takes 2 * steps, for `optim.steps` optimisation steps, at student steps drawn uniformly
    or in proportion to `step_weights`."""
    student = _student_of(teacher, depth, seed)

    def loss_at(step: int) -> torch.Tensor:
        rescale = cfg.guidance_rescale
        return round_loss(
            student, teacher, guidance_scale, steps, data, cfg.batch, generator, cfg.flow_shift, rescale,
            step_weights,
        )  # fmt: skip

    return fit(student, loss_at, optim, log, f"distill {2 * steps}->{steps}")


def distill(
    cfg: DistillConfig, teacher: VideoDiT, vae: VideoVAE, seed: int, log: Log
) -> tuple[dict[int, VideoDiT], dict[str, Any]]:
    """Students by step count (those in cfg.keep_steps) and the manifest entry."""
    reachable = [cfg.teacher_steps >> r for r in range(1, cfg.teacher_steps.bit_length())]
    if cfg.teacher_steps % 2 or not set(cfg.keep_steps) <= set(reachable):
        raise ValueError(f"keep_steps {cfg.keep_steps} must come from halving teacher_steps: {reachable}")
    if cfg.student_depth is not None and cfg.student_depth < teacher.config.depth:
        raise ValueError(
            f"student_depth {cfg.student_depth} is below the teacher's {teacher.config.depth} blocks: "
            "choose at least that (or None: the teacher's)"
        )
    if cfg.first_round_sampling not in ("uniform", "error"):
        raise ValueError(f"first_round_sampling {cfg.first_round_sampling!r} must be 'uniform' or 'error'")
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
    depth = cfg.student_depth  # grows the first student only; later ones copy their teacher
    if cfg.fold_optim is not None:
        student = _student_of(teacher, depth, seed)
        depth = None

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
        weights = None
        if not rounds and cfg.first_round_sampling == "error":
            errors = start_errors(
                teacher, guidance, steps, data, 4 * cfg.batch, seed, cfg.flow_shift, cfg.guidance_rescale
            )
            weights = errors / errors.sum()  # (steps,)
            log(f"[distill] first round's step weights: {[round(w, 3) for w in weights.tolist()]}")
        result = _distill_round(
            teacher, guidance, steps, data, cfg, optim, generator, log, depth, seed, weights
        )  # fmt: skip
        depth = None
        rounds.append(
            {
                "teacher_steps": 2 * steps,
                "student_steps": steps,
                "steps": optim.steps,
                "guidance_scale": guidance,
                **({"step_weights": [round(w, 4) for w in weights.tolist()]} if weights is not None else {}),
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
        **({"student_depth": cfg.student_depth} if cfg.student_depth is not None else {}),
        "guidance_scale": cfg.guidance_scale,
        "guidance_rescale": cfg.guidance_rescale,  # the engine samples the folder's guided teacher with it
        "sample_students_at_guidance": 1.0,
        "flow_shift": cfg.flow_shift,  # the engine samples every DiT of this folder on grids shifted by it
        "rounds": rounds,
    }
    return students, entry
