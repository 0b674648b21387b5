"""`reelforge model ...`: train the built-in model stage by stage into one weights folder, then score it.

    reelforge model train-vae --out DIR     # vae.safetensors
    reelforge model train     --out DIR     # teacher.safetensors (needs the VAE in DIR)
    reelforge model distill   --out DIR     # student_{4,2,1}step.safetensors (needs the teacher)
    reelforge model dmd       --out DIR     # fine-tunes student_4step.safetensors in place (optional)
    reelforge model eval      --out DIR     # eval table, into DIR/manifest.json

Every stage records what it did in DIR/manifest.json. `--config tiny` runs each stage in seconds (CI);
`--config default` is the real run, whose output folder is what the package ships
(services/reelforge/engine/weights). Heavy imports happen inside the commands, so `reelforge --help`
stays fast.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

DEFAULT_OUT = Path(".reelforge/model")
CONFIG_NAMES = ("tiny", "default")
T_SAMPLINGS = ("uniform", "logit_normal", "shifted")  # train_dit.T_SAMPLINGS, without importing torch here
F = TypeVar("F", bound=Callable[..., Any])


_config = click.option(
    "--config",
    "config_name",
    type=click.Choice(CONFIG_NAMES),
    default="default",
    show_default=True,
    help="tiny: seconds, for CI; default: the real run.",
)
_out = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Weights folder: earlier stages' files are read from it, this stage's written to it.",
)
_seed = click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seeds the generated clips and prompts, the initialisation and the sampling noise.",
)
_device = click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where to train / sample. Seeds give the same random draws on either (they come from the CPU).",
)
_steps = click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Override the config's optimisation steps (per halving round for distill).",
)


def _stage_options(command: F) -> F:
    return _config(_steps(_out(_seed(_device(command)))))


_reading_order = click.option(
    "--reading-order",
    is_flag=True,
    default=False,
    help="Name the left object first in two-object captions, so a clause's place tells which object "
    "it describes (off in the shipped recipe); the teacher and its distillation should agree.",
)


_two_object_fraction = click.option(  # distill and dmd: each stage draws its own clips
    "--two-object-fraction",
    type=click.FloatRange(min=0.0, max=1.0),
    default=None,
    help="Override the share of the stage's clips (and so of its captions) with two objects.",
)


def _with_steps(cfg: Any, steps: int | None, **optim: float | None) -> Any:
    """cfg with its optimiser's steps (and any other OptimConfig field given) overridden where not None."""
    overrides = {k: v for k, v in {"steps": steps, **optim}.items() if v is not None}
    return (
        cfg if not overrides else dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, **overrides))
    )


def _echo(line: str) -> None:
    click.echo(line, err=True)


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise click.ClickException(
            f"no {path.name} in {path.parent}: run `reelforge model {stage} --out {path.parent}` first"
        )
    return path


@click.group()
def model() -> None:
    """Train, distill and evaluate the built-in text-to-video model."""


@model.command("train-vae")
@_stage_options
def train_vae_command(config_name: str, steps: int | None, out: Path, seed: int, device: str) -> None:
    """Train the causal 3D VAE and measure its latent statistics."""
    from reelforge.engine.checkpoints import VAE_FILE, record, save_model
    from reelforge.training.train_vae import VAE_PRESETS, train_vae

    start = time.perf_counter()
    vae, entry = train_vae(_with_steps(VAE_PRESETS[config_name], steps), seed, _echo, device)
    out.mkdir(parents=True, exist_ok=True)
    save_model(vae, out / VAE_FILE)
    record(out, "vae", {"config": config_name, **entry, "seconds": round(time.perf_counter() - start, 1)})
    click.echo(f"wrote {out / VAE_FILE}")


@model.command("train")
@_stage_options
@click.option(
    "--t-sampling",
    type=click.Choice(T_SAMPLINGS),
    default=None,
    help="Override the config's training-time distribution (shifted: uniform through the sampler's "
    "time shift).",
)
@click.option(
    "--t-shift",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Override the shift that --t-sampling shifted applies (SD3's s).",
)
@click.option(
    "--grounding-weight",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Override the weight of the grounding loss (TokenCompose: each object's words put their "
    "cross-attention on that object; 0 = off).",
)
@_reading_order
@click.option(
    "--resume",
    is_flag=True,
    default=False,
    help="Go on training the teacher already in --out (a warm restart of the schedule from its weights) "
    "instead of a new one; give its seed another value so it draws new batches.",
)
@click.option(
    "--lr", type=click.FloatRange(min=0.0, min_open=True), default=None, help="Override the peak rate."
)
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Override the linear warm-up steps.")
def train_command(
    config_name: str,
    steps: int | None,
    out: Path,
    seed: int,
    device: str,
    t_sampling: str | None,
    t_shift: float | None,
    grounding_weight: float | None,
    reading_order: bool,
    resume: bool,
    lr: float | None,
    warmup: int | None,
) -> None:
    """Train the DiT teacher by rectified flow on the VAE's latents."""
    from reelforge.engine.checkpoints import (
        TEACHER_FILE,
        VAE_FILE,
        load_dit,
        load_vae,
        read_manifest,
        record,
        save_model,
        sha256_of,
        verified,
    )  # fmt: skip
    from reelforge.training.train_dit import DIT_PRESETS, train_dit

    start = time.perf_counter()
    vae = load_vae(verified(_need(out / VAE_FILE, "train-vae"))).to(device).eval()
    cfg = _with_steps(DIT_PRESETS[config_name], steps, lr=lr, warmup=warmup)
    if warmup is not None and warmup >= cfg.optim.steps:
        raise click.BadParameter(f"{warmup} must be below the {cfg.optim.steps} steps", param_hint="--warmup")
    if t_sampling is not None:
        cfg = dataclasses.replace(cfg, t_sampling=t_sampling)
    if t_shift is not None:
        cfg = dataclasses.replace(cfg, t_shift=t_shift)
    if grounding_weight is not None:
        cfg = dataclasses.replace(cfg, grounding_weight=grounding_weight)
    if reading_order:
        cfg = dataclasses.replace(cfg, reading_order=True)
    resumed: dict[str, Any] = {}
    init = None
    if resume:
        path = verified(_need(out / TEACHER_FILE, "train"))
        init = load_dit(path)
        if init.config != cfg.dit:
            raise click.ClickException(
                f"{path} is a DiT of {init.config}, not the {config_name!r} config's {cfg.dit}: "
                "resume it with the config it was trained with"
            )
        before = {k: v for k, v in read_manifest(out)["stages"].get("teacher", {}).items() if k != "losses"}
        resumed = {"resumed_from": {"sha256": sha256_of(path), **before}}
    teacher, entry = train_dit(cfg, vae, seed, _echo, init=init)
    save_model(teacher, out / TEACHER_FILE)
    entry = {"config": config_name, **entry, "lr": cfg.optim.lr, "warmup": cfg.optim.warmup, **resumed}
    record(out, "teacher", {**entry, "seconds": round(time.perf_counter() - start, 1)})
    click.echo(f"wrote {out / TEACHER_FILE}")


@model.command("distill")
@_stage_options
@click.option(
    "--guidance-rescale",
    type=click.FloatRange(min=0.0, max=1.0),
    default=None,
    help="Override the config's rescaled-guidance phi (0: plain classifier-free guidance; Lin et al. 2024).",
)
@_two_object_fraction
@click.option(
    "--first-round-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Optimisation steps of the first halving round (the one that folds the guidance in); default: "
    "the config's, or --steps when that is given.",
)
@click.option(
    "--student-depth",
    type=click.IntRange(min=1),
    default=None,
    help="Blocks of the students (default: the teacher's). Deeper, the first student is the teacher with "
    "identity-initialised blocks appended (Net2DeeperNet); each block adds 1.1 MB per student on disk.",
)
@click.option(
    "--first-round-sampling",
    type=click.Choice(["uniform", "error"]),
    default=None,
    help="How the first (guided) round draws each clip's student step: uniformly, or in proportion to "
    "each step's error before training (default: the config's).",
)
@_reading_order
def distill_command(
    config_name: str,
    steps: int | None,
    out: Path,
    seed: int,
    device: str,
    guidance_rescale: float | None,
    two_object_fraction: float | None,
    first_round_steps: int | None,
    student_depth: int | None,
    first_round_sampling: str | None,
    reading_order: bool,
) -> None:
    """Distill the guided teacher into few-step students (progressive distillation)."""
    from reelforge.engine.checkpoints import (
        TEACHER_FILE,
        VAE_FILE,
        load_dit,
        load_vae,
        record,
        save_model,
        student_file,
        verified,
    )  # fmt: skip
    from reelforge.training.distill import DISTILL_PRESETS, distill

    start = time.perf_counter()
    vae = load_vae(verified(_need(out / VAE_FILE, "train-vae"))).to(device).eval()
    teacher = load_dit(verified(_need(out / TEACHER_FILE, "train"))).to(device)
    cfg = _with_steps(DISTILL_PRESETS[config_name], steps)
    if guidance_rescale is not None:
        cfg = dataclasses.replace(cfg, guidance_rescale=guidance_rescale)
    if two_object_fraction is not None:
        cfg = dataclasses.replace(cfg, two_object_fraction=two_object_fraction)
    if steps is not None or first_round_steps is not None:  # --steps alone sets every round's
        cfg = dataclasses.replace(cfg, first_round_steps=first_round_steps)
    if student_depth is not None:
        cfg = dataclasses.replace(cfg, student_depth=student_depth)
    if first_round_sampling is not None:
        cfg = dataclasses.replace(cfg, first_round_sampling=first_round_sampling)
    if reading_order:
        cfg = dataclasses.replace(cfg, reading_order=True)
    students, entry = distill(cfg, teacher, vae, seed, _echo)
    for n, student in students.items():
        save_model(student, out / student_file(n))
    entry = {"config": config_name, **entry, "seconds": round(time.perf_counter() - start, 1)}
    record(out, "distill", entry, drop=("dmd",))  # a dmd stage described the students just replaced
    click.echo("wrote " + ", ".join(str(out / student_file(n)) for n in students))


@model.command("dmd")
@_stage_options
@click.option(
    "--gan-weight",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Weight of DMD2's GAN term in the student's loss: a head on the critic tells the student's clips "
    "from real training clips (default: the config's; 0, off, in the shipped recipe).",
)
@_two_object_fraction
def dmd_command(
    config_name: str,
    steps: int | None,
    out: Path,
    seed: int,
    device: str,
    gan_weight: float | None,
    two_object_fraction: float | None,
) -> None:
    """Fine-tune the folder's 4-step student by distribution matching (DMD2) against the guided teacher."""
    from reelforge.engine.checkpoints import (
        TEACHER_FILE,
        VAE_FILE,
        load_dit,
        load_vae,
        read_manifest,
        record,
        save_model,
        sha256_of,
        student_file,
        verified,
    )  # fmt: skip
    from reelforge.engine.mini import STUDENT_RENOISE
    from reelforge.training.dmd import DMD_PRESETS, dmd

    cfg = _with_steps(DMD_PRESETS[config_name], steps)
    if gan_weight is not None:
        cfg = dataclasses.replace(cfg, gan_weight=gan_weight)
    if two_object_fraction is not None:
        cfg = dataclasses.replace(cfg, two_object_fraction=two_object_fraction)
    path = _need(out / student_file(cfg.student_steps), "distill")
    stages = read_manifest(out)["stages"]
    if "dmd" in stages:
        raise click.ClickException(
            f"{path.name} in {out} is already fine-tuned by dmd: run `reelforge model distill --out {out}` "
            "first for a fresh student"
        )
    distilled = stages.get("distill", {})
    if "guidance_scale" not in distilled:
        raise click.ClickException(
            f"{out}/manifest.json records no distillation: run `reelforge model distill --out {out}` first"
        )
    start = time.perf_counter()
    vae = load_vae(verified(_need(out / VAE_FILE, "train-vae"))).to(device).eval()
    teacher = load_dit(verified(_need(out / TEACHER_FILE, "train"))).to(device)
    student = load_dit(verified(path)).to(device)
    before = sha256_of(path)
    guidance, shift = float(distilled["guidance_scale"]), float(distilled.get("flow_shift", 1.0))
    rescale = float(distilled.get("guidance_rescale", 0.0))  # as the students were distilled
    tuned, entry = dmd(cfg, student, teacher, vae, guidance, shift, STUDENT_RENOISE, seed, _echo, rescale)
    save_model(tuned, path)
    entry = {"config": config_name, **entry, "from_sha256": before}
    record(out, "dmd", {**entry, "seconds": round(time.perf_counter() - start, 1)})
    click.echo(f"wrote {path}")


@model.command("eval")
@_config
@click.option(
    "--prompts", type=click.IntRange(min=2), default=None, help="Override the number of held-out prompts."
)
@_out
@_seed
@_device
def eval_command(config_name: str, prompts: int | None, out: Path, seed: int, device: str) -> None:
    """Score teacher@50, teacher@4 and student@4/2/1 on held-out prompts; print a markdown table."""
    from reelforge.engine.checkpoints import VAE_FILE, record
    from reelforge.training.evaluate import EVAL_PRESETS, evaluate

    _need(out / VAE_FILE, "train-vae")
    cfg = EVAL_PRESETS[config_name]
    if prompts is not None:
        cfg = dataclasses.replace(cfg, prompts=prompts, reference_clips=prompts)
    start = time.perf_counter()
    entry = evaluate(out, cfg, seed, _echo, device)
    if not entry["rows"]:
        raise click.ClickException(
            f"nothing to evaluate in {out}: run `reelforge model train --out {out}` first"
        )
    record(out, "eval", {"config": config_name, **entry, "seconds": round(time.perf_counter() - start, 1)})
    click.echo(entry["table"])
