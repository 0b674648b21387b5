"""The weights the package ships (services/reelforge/engine/weights): complete, intact, small enough,
served by default, and good enough that a plain prompt comes out as the evaluator expects."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reelforge.core.catalog import REELFORGE_MINI
from reelforge.engine.checkpoints import (
    MANIFEST,
    TEACHER_FILE,
    VAE_FILE,
    load_dit,
    read_manifest,
    sha256_of,
    student_file,
)
from reelforge.engine.interface import GenerationRequest, StepEvent
from reelforge.engine.mini import SHIPPED_WEIGHTS, STUDENT_RENOISE, MiniEngine
from reelforge.training.clips import TWO_OBJECT_FRACTION, sample_specs
from reelforge.training.distill import DISTILL_PRESETS
from reelforge.training.dmd import DMD_PRESETS
from reelforge.training.evaluator import evaluate_clip
from reelforge.training.train_dit import DIT_PRESETS
from reelforge.training.train_vae import VAE_PRESETS, reconstruction_metrics

FILES = (VAE_FILE, TEACHER_FILE, student_file(4), student_file(2), student_file(1))
PROMPT = "a red circle moving right on a black background"


@pytest.fixture(scope="module")
def engine() -> MiniEngine:
    return MiniEngine()


def default_request(prompt: str, seed: int) -> GenerationRequest:
    """What the gateway sends the worker for a request that sets nothing but the prompt."""
    width, height = (int(v) for v in REELFORGE_MINI.default_size.split("x"))
    return GenerationRequest(
        prompt=prompt,
        negative_prompt="",
        width=width,
        height=height,
        num_frames=int(REELFORGE_MINI.default_seconds) * REELFORGE_MINI.default_fps,
        fps=REELFORGE_MINI.default_fps,
        num_steps=REELFORGE_MINI.default_steps,
        guidance_scale=REELFORGE_MINI.default_guidance_scale,
        seed=seed,
    )


def test_every_file_matches_its_manifest_and_all_fit_in_30_mb() -> None:
    manifest = read_manifest(SHIPPED_WEIGHTS)
    for name in FILES:
        path = SHIPPED_WEIGHTS / name
        assert path.is_file(), f"{name} is not shipped"
        assert manifest["files"][name]["sha256"] == sha256_of(path)
    total = sum((SHIPPED_WEIGHTS / name).stat().st_size for name in FILES)
    assert total == manifest["total_bytes"] <= 30 * 10**6
    assert (SHIPPED_WEIGHTS / MANIFEST).stat().st_size < 64 * 1024


def _full_history() -> bool:
    """True in a git checkout that holds all of its history (not a shallow clone or an unpacked tree)."""
    try:
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=Path(__file__).parent,
                                 capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return shallow.returncode == 0 and shallow.stdout.strip() == "false"


def test_manifest_records_how_each_stage_was_made() -> None:
    manifest = read_manifest(SHIPPED_WEIGHTS)
    for stage in ("vae", "teacher", "distill", "dmd"):
        entry = manifest["stages"][stage]
        assert entry["config"] == "default"
        assert entry["code_commit"], f"{stage} has no code commit"
        assert entry["seconds"] > 0
    evaluation = manifest["eval"]
    assert evaluation["prompts"] >= 200 and evaluation["code_commit"]
    if _full_history():  # each recorded commit is one of this repository's
        stages = ("vae", "teacher", "distill", "dmd")
        for commit in [*(manifest["stages"][s]["code_commit"] for s in stages), evaluation["code_commit"]]:
            found = subprocess.run(
                ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=Path(__file__).parent
            )
            assert found.returncode == 0, f"{commit} is not a commit of this checkout"
    assert set(evaluation["rows"]) >= {
        "teacher@50", "teacher@4", "student@4", "student@2", "student@1"
    }  # fmt: skip


def test_the_default_configs_are_the_recipe_of_the_shipped_weights() -> None:
    """`reelforge model train | distill --config default` (docs/model.md, "Commands") remakes what ships."""
    stages = read_manifest(SHIPPED_WEIGHTS)["stages"]
    teacher, dit = stages["teacher"], DIT_PRESETS["default"]
    shift = dit.t_shift if dit.t_sampling == "shifted" else None
    assert (teacher["steps"], teacher["batch"], teacher["clips"], teacher["caption_dropout"]) == (
        dit.optim.steps, dit.batch, dit.clips, dit.caption_dropout
    )  # fmt: skip
    assert (teacher["t_sampling"], teacher.get("t_shift")) == (dit.t_sampling, shift)
    assert load_dit(SHIPPED_WEIGHTS / TEACHER_FILE).config == dit.dit  # hidden, depth, heads (section 18)
    distill, students = stages["distill"], DISTILL_PRESETS["default"]
    assert (distill["steps_per_round"], distill["batch"], distill["clips"]) == (
        students.optim.steps, students.batch, students.clips
    )  # fmt: skip
    assert (distill["guidance_scale"], distill["flow_shift"]) == (
        students.guidance_scale,
        students.flow_shift,
    )
    # A manifest from before the first round's steps were recorded ran every round alike.
    first_round = students.first_round_steps or students.optim.steps
    assert distill.get("first_round_steps", distill["steps_per_round"]) == first_round
    # A manifest from before the share was recorded was distilled on the teacher's share.
    assert distill.get("two_object_fraction", TWO_OBJECT_FRACTION) == students.two_object_fraction
    # Recorded only when on: a manifest without it trained on captions in either order.
    assert (teacher.get("reading_order", False), distill.get("reading_order", False)) == (
        dit.reading_order, students.reading_order
    )  # fmt: skip
    assert stages["vae"]["steps"] == VAE_PRESETS["default"].optim.steps
    # `reelforge model dmd --config default` then fine-tuned the distilled 4-step student (section 28).
    dmd, tuned = stages["dmd"], DMD_PRESETS["default"]
    assert (dmd["student_steps"], dmd["steps"], dmd["lr"], dmd["critic_lr"]) == (
        tuned.student_steps, tuned.optim.steps, tuned.optim.lr, tuned.critic_lr
    )  # fmt: skip
    assert (dmd["critic_updates"], dmd["critic_warmup"], dmd["batch"], dmd["clips"]) == (
        tuned.critic_updates, tuned.critic_warmup, tuned.batch, tuned.clips
    )  # fmt: skip
    assert (tuple(dmd["t_range"]), dmd["guidance_scale"]) == (tuned.t_range, distill["guidance_scale"])
    assert dmd["renoise"] == STUDENT_RENOISE  # trained as the engine samples it
    # The shipped stage ran before its share of two-object captions was recorded: the teacher's.
    assert dmd.get("two_object_fraction", TWO_OBJECT_FRACTION) == tuned.two_object_fraction


def test_default_request_is_served_by_the_4_step_student(engine: MiniEngine) -> None:
    assert engine.version.startswith("weights+")
    assert engine.distilled_guidance == REELFORGE_MINI.default_guidance_scale
    key, guidance = engine.dit_key_for(default_request(PROMPT, seed=0))
    assert (key, guidance) == (4, 1.0)  # one conditional pass per step, guidance in the weights


def test_the_readme_prompt_comes_out_as_asked(engine: MiniEngine) -> None:
    events: list[StepEvent] = []
    accepted = 0
    for seed in range(4):
        frames = engine.generate(default_request(PROMPT, seed), events.append)
        score = evaluate_clip(frames, PROMPT)
        accepted += score.colour_ok and score.direction_ok and score.background_ok
    assert [e.step for e in events if e.phase == "denoising"][:5] == [0, 1, 2, 3, 4]
    assert accepted >= 3, f"only {accepted} of 4 seeds gave a red object moving right on black"


def test_vae_round_trip_keeps_held_out_clips(engine: MiniEngine) -> None:
    metrics = reconstruction_metrics(engine.vae, sample_specs(8, seed=123, split="heldout"), batch=4)
    assert metrics["psnr_db"] >= 25.0, metrics
