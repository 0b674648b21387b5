"""Stage 4: score the teacher and the students on held-out prompts, through the serving engine.

Each run (teacher@50, teacher@4, student@4/2/1) generates through a MiniEngine one
64x64, 16-frame clip per held-out prompt with `MiniEngine.generate`, the code path the platform serves,
then `evaluator.evaluate_set` scores the clips against their prompts and against real held-out clips.
The teacher file runs alone, with classifier-free guidance at the scale (and rescale) its students were
distilled with. The students run as they are served: the whole weights folder, asked for their step
count at that guidance, routes each request to its student (one conditional pass a step, sampled
ancestrally: engine/mini.STUDENT_RENOISE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reelforge.engine.checkpoints import TEACHER_FILE, read_manifest, student_file
from reelforge.engine.interface import GenerationRequest, StepEvent
from reelforge.engine.mini import MiniEngine
from reelforge.training.clips import (
    DEFAULT_FPS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    NUM_PHRASINGS,
    render,
    sample_specs,
)
from reelforge.training.evaluator import evaluate_set
from reelforge.training.train_vae import Log


@dataclass(frozen=True)
class EvalConfig:
    prompts: int = 200  # the table is over >= 200 held-out prompts
    reference_clips: int = 200  # real clips for the Frechet distance; compare only equal-sized sets
    guidance_scale: float = 4.0  # for the teacher, unless the manifest records the distillation's scale
    runs: tuple[tuple[str, int], ...] = (
        ("teacher", 50),
        ("teacher", 4),
        ("student", 4),
        ("student", 2),
        ("student", 1),
    )


EVAL_PRESETS = {"default": EvalConfig(), "tiny": EvalConfig(prompts=4, reference_clips=4)}
COLUMNS = (  # (metric key, table header, as a percentage)
    ("colour_accuracy", "colour", True),
    ("shape_accuracy", "shape", True),
    ("direction_accuracy", "direction", True),
    ("speed_accuracy", "speed", True),
    ("background_accuracy", "background", True),
    ("consistency", "consistency", False),
    ("object_area_ratio", "object area", False),  # x the real clips' (evaluator.evaluate_set)
    ("frechet_distance", "Frechet dist.", False),
    ("seconds_per_clip", "s / clip", False),
)


def heldout_prompts(n: int, seed: int) -> list[str]:
    """Prompts never trained on (held-out combinations), cycling through every phrasing."""
    return [
        spec.caption(i % NUM_PHRASINGS) for i, spec in enumerate(sample_specs(n, seed=seed, split="heldout"))
    ]


def _ignore(event: StepEvent) -> None:
    pass


def _request(prompt: str, steps: int, guidance: float, seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt, "", DEFAULT_SIZE, DEFAULT_SIZE, DEFAULT_FRAMES, DEFAULT_FPS, steps, guidance, seed
    )


def generate_clips(
    engine: MiniEngine, prompts: list[str], steps: int, guidance: float, seed: int
) -> list[np.ndarray]:
    return [engine.generate(_request(p, steps, guidance, seed + i), _ignore) for i, p in enumerate(prompts)]


def evaluate(run_dir: Path, cfg: EvalConfig, seed: int, log: Log, device: str = "cpu") -> dict[str, Any]:
    """Scores every run whose DiT file exists; returns the manifest's eval entry (rows and table)."""
    distilled = read_manifest(run_dir)["stages"].get("distill", {})
    teacher_guidance = float(distilled.get("guidance_scale", cfg.guidance_scale))
    teacher_rescale = float(distilled.get("guidance_rescale", 0.0))  # the engine applies it (checkpoints.py)
    prompts = heldout_prompts(cfg.prompts, seed)
    reference = [render(spec) for spec in sample_specs(cfg.reference_clips, seed=seed + 1, split="heldout")]
    rows: dict[str, dict[str, float]] = {}
    folder: MiniEngine | None = None  # serves the students as the platform does
    for model, steps in cfg.runs:
        path = run_dir / (TEACHER_FILE if model == "teacher" else student_file(steps))
        if not path.is_file():
            log(f"[eval] {model}@{steps}: no {path.name}, skipped")
            continue
        if model == "teacher":  # the teacher file alone: every step count runs it, with guidance
            engine = MiniEngine(device=device, checkpoint=path)
        else:  # the folder at the distilled guidance routes `steps` to its student (and its sampling)
            engine = folder = folder or MiniEngine(device=device, checkpoint=run_dir)
            if engine.dit_key_for(_request("", steps, teacher_guidance, 0))[0] != steps:
                raise RuntimeError(f"the weights folder does not serve {path.name} at {steps} steps")
        guidance = teacher_guidance
        start = time.perf_counter()
        clips = generate_clips(engine, prompts, steps, guidance, seed)
        seconds = (time.perf_counter() - start) / len(prompts)
        rows[f"{model}@{steps}"] = {**evaluate_set(clips, prompts, reference), "seconds_per_clip": seconds}
        log(
            f"[eval] {model}@{steps}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in rows[f"{model}@{steps}"].items())
        )
    return {
        "prompts": cfg.prompts,
        "reference_clips": cfg.reference_clips,
        "data_seed": seed,
        "teacher_guidance_scale": teacher_guidance,
        "teacher_guidance_rescale": teacher_rescale,
        "rows": rows,
        "table": markdown_table(rows),
    }


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        "| run | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, metrics in rows.items():
        cells = [f"{100 * metrics[k]:.1f} %" if pct else f"{metrics[k]:.3g}" for k, _, pct in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
