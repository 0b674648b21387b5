"""`reelforge model train-vae | train | distill | eval` end to end on the tiny config: every stage learns
(its logged loss falls), writes safetensors the engine serves, and keeps the manifest true to the files."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from reelforge.engine import mini
from reelforge.engine.checkpoints import (
    MANIFEST,
    WeightsError,
    load_dit,
    load_vae,
    save_model,
    sha256_of,
    student_file,
)
from reelforge.engine.interface import GenerationRequest, StepEvent
from reelforge.engine.mini import MiniEngine
from reelforge.training.cli import model
from reelforge.training.clips import TWO_OBJECT_FRACTION
from reelforge.training.distill import DISTILL_PRESETS, distill, start_errors
from reelforge.training.evaluator import parse_prompt
from reelforge.training.train_dit import build_dataset
from reelforge.training.train_vae import OptimConfig

# The module fixture trains all four stages inside the first test: minutes on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(900)

STAGES = ("train-vae", "train", "distill", "eval")
FILES = ("vae.safetensors", "teacher.safetensors", *(student_file(n) for n in (4, 2, 1)))
REQUEST = GenerationRequest(
    prompt="a red circle moving right on a black background",
    negative_prompt="",
    width=64,
    height=64,
    num_frames=16,
    fps=8,
    num_steps=4,
    guidance_scale=1.0,
    seed=7,
)
RESCALE = 0.5  # distilled with rescaled guidance, set on the command line over the config's
T_SHIFT = 2.5  # the teacher trains on shifted t, also set on the command line
TWO_OBJECTS = 0.75  # the share of two-object distillation clips, also set on the command line
FIRST_ROUND = 24  # steps of the guided first halving round, against the tiny config's 16 a round
GROUNDING = 0.5  # the teacher trains with the grounding loss, also set on the command line
DISTILL_OPTIONS = ["--guidance-rescale", str(RESCALE), "--two-object-fraction", str(TWO_OBJECTS)]
DISTILL_OPTIONS += [
    "--first-round-steps",
    str(FIRST_ROUND),
    "--reading-order",
    "--first-round-sampling",
    "error",
]


def ignore(event: StepEvent) -> None:
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The weights folder after all four stages, and each stage's output."""
    out = tmp_path_factory.mktemp("weights")
    outputs = {}
    for stage in STAGES:
        extra = {
            "train": ["--t-sampling", "shifted", "--t-shift", str(T_SHIFT), "--reading-order"]
            + ["--grounding-weight", str(GROUNDING)],
            "distill": DISTILL_OPTIONS,
        }.get(stage, [])
        result = CliRunner().invoke(
            model, [stage, "--config", "tiny", "--out", str(out), "--seed", "3", *extra]
        )
        assert result.exit_code == 0, f"{stage}: {result.output}"
        outputs[stage] = result.output
    return out, outputs


def _copy(src: Path, dest: Path, names: tuple[str, ...] | None = None) -> None:
    """Copies the files `names` (default: all) of folder src into dest, so a test changes a copy."""
    for name in names if names is not None else tuple(p.name for p in src.iterdir()):
        (dest / name).write_bytes((src / name).read_bytes())


def _manifest(out: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((out / MANIFEST).read_text())
    return manifest


def test_every_stage_writes_its_files_and_the_manifest_hashes_them(run: tuple[Path, dict[str, str]]) -> None:
    out, _ = run
    manifest = _manifest(out)
    assert sorted(manifest["files"]) == sorted(FILES)
    for name in FILES:
        assert manifest["files"][name]["sha256"] == sha256_of(out / name), name
    assert manifest["total_bytes"] == sum((out / name).stat().st_size for name in FILES)
    for stage in ("vae", "teacher", "distill"):
        assert manifest["stages"][stage]["data_seed"] == 3
        assert "code_commit" in manifest["stages"][stage]
    assert manifest["stages"]["teacher"]["steps"] == 40
    # The command line's time distribution overrides the config's, and the manifest says which trained it.
    assert (manifest["stages"]["teacher"]["t_sampling"], manifest["stages"]["teacher"]["t_shift"]) == (
        "shifted",
        T_SHIFT,
    )
    assert manifest["stages"]["distill"]["two_object_fraction"] == TWO_OBJECTS
    teacher = manifest["stages"]["teacher"]
    assert teacher["grounding_weight"] == GROUNDING
    # The grounding term is logged over the same windows as the total loss; it trains the attention.
    assert [step for step, _ in teacher["grounding_losses"]] == [step for step, _ in teacher["losses"]]
    assert teacher["grounding_losses"][-1][1] < teacher["grounding_losses"][0][1], teacher["grounding_losses"]
    # --reading-order reached both stages' data (clips.sample_specs tests what it does to them).
    assert [manifest["stages"][s].get("reading_order") for s in ("teacher", "distill")] == [True, True]
    distilled = manifest["stages"]["distill"]
    assert (distilled["first_round_steps"], distilled["steps_per_round"]) == (FIRST_ROUND, 16)
    assert [r["steps"] for r in distilled["rounds"]] == [FIRST_ROUND, 16, 16]
    assert distilled["rounds"][0]["losses"][-1][0] > 16  # the first round did run its extra steps
    # --first-round-sampling error: the first round drew its steps by the weights it records; later ones
    # drew uniformly.
    assert [("step_weights" in r) for r in distilled["rounds"]] == [True, False, False]


def test_error_sampling_weighs_the_first_rounds_steps_by_their_start_error(
    run: tuple[Path, dict[str, str]],
) -> None:
    out, _ = run
    distilled = _manifest(out)["stages"]["distill"]
    weights = distilled["rounds"][0]["step_weights"]
    assert len(weights) == 4 and all(w > 0 for w in weights) and sum(weights) == pytest.approx(1, abs=1e-3)
    cfg = DISTILL_PRESETS["tiny"]
    data = build_dataset(
        load_vae(out / "vae.safetensors").eval(), cfg.clips, 3, two_object_fraction=TWO_OBJECTS,
        reading_order=True,
    )  # fmt: skip
    teacher = load_dit(out / "teacher.safetensors").eval()
    errors = start_errors(
        teacher, cfg.guidance_scale, 4, data, 4 * cfg.batch, 3, cfg.flow_shift, RESCALE
    )  # what distill measured before the round: the recorded weights are these, normalised
    assert errors.shape == (4,) and (errors > 0).all()
    assert (errors / errors.sum()).tolist() == pytest.approx(weights, abs=2e-4)
    again = start_errors(teacher, cfg.guidance_scale, 4, data, 4 * cfg.batch, 3, cfg.flow_shift, RESCALE)
    assert torch.equal(errors, again)  # its own generator from the seed: deterministic
    other = start_errors(teacher, cfg.guidance_scale, 4, data, 4 * cfg.batch, 4, cfg.flow_shift, RESCALE)
    assert not torch.equal(errors, other)


def test_the_dataset_holds_two_object_clips_in_the_share_asked_for(run: tuple[Path, dict[str, str]]) -> None:
    vae = load_vae(run[0] / "vae.safetensors").eval()
    for share, objects in ((0.0, {1}), (1.0, {2})):
        data = build_dataset(vae, clips=12, seed=3, two_object_fraction=share)
        assert len(data.captions) == len(data.text) == len(data.mask)
        assert {len(parse_prompt(c).objects) for c in data.captions} == objects, share
    mixed = build_dataset(vae, clips=48, seed=3, two_object_fraction=0.5)
    counts = [len(parse_prompt(mixed.captions[i]).objects) for i in mixed.caption_index.tolist()]
    # 24 expected; a binomial(48, 0.5) count falls outside [12, 36] less than 1e-3 of the time.
    assert 12 <= counts.count(2) <= 36, counts
    cfg = replace(DISTILL_PRESETS["tiny"], two_object_fraction=1.5)
    with pytest.raises(ValueError, match=r"two_object_fraction 1.5 must be in \[0, 1\]"):
        distill(cfg, load_dit(run[0] / "teacher.safetensors"), vae, seed=3, log=lambda _: None)
    cfg = replace(DISTILL_PRESETS["tiny"], first_round_steps=0)
    with pytest.raises(ValueError, match="first_round_steps 0 must be at least 1"):
        distill(cfg, load_dit(run[0] / "teacher.safetensors"), vae, seed=3, log=lambda _: None)


def test_each_stage_lowers_its_loss(run: tuple[Path, dict[str, str]]) -> None:
    stages = _manifest(run[0])["stages"]
    first_round = stages["distill"]["rounds"][0]  # the guided round: later ones start near their target
    assert stages["distill"]["guidance_fold"] is None  # the default folds the guidance in round 1
    for name, losses in (("vae", stages["vae"]["losses"]), ("teacher", stages["teacher"]["losses"]),
                         ("distill", first_round["losses"])):  # fmt: skip
        first, last = losses[0][1], losses[-1][1]
        assert last < 0.8 * first, (name, losses)
    assert [r["student_steps"] for r in stages["distill"]["rounds"]] == [4, 2, 1]
    assert stages["vae"]["heldout_reconstruction"]["psnr_db"] > 10


def test_the_guidance_folding_stage_learns_the_guided_velocity(run: tuple[Path, dict[str, str]]) -> None:
    """Meng et al.'s stage 1, off by default: the folded model replaces the guided teacher, so every
    halving round after it runs unguided."""
    out, _ = run
    cfg = replace(
        DISTILL_PRESETS["tiny"],
        fold_optim=OptimConfig(steps=16, lr=1e-3, warmup=2, ema_decay=0.5, log_every=4),
    )
    teacher = load_dit(out / "teacher.safetensors")
    students, entry = distill(
        cfg, teacher, load_vae(out / "vae.safetensors").eval(), seed=3, log=lambda _: None
    )
    losses = entry["guidance_fold"]["losses"]
    assert losses[-1][1] < 0.8 * losses[0][1], losses
    assert entry["guidance_fold"]["guidance_scale"] == cfg.guidance_scale > 1
    assert [(r["student_steps"], r["guidance_scale"]) for r in entry["rounds"]] == [
        (4, 1.0),
        (2, 1.0),
        (1, 1.0),
    ]
    assert sorted(students) == [1, 2, 4] and entry["method"].startswith("guidance folding")


def test_students_grown_deeper_than_the_teacher_keep_that_depth_and_load_back(
    run: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    out, _ = run
    teacher = load_dit(out / "teacher.safetensors")
    depth = teacher.config.depth + 1
    cfg = replace(DISTILL_PRESETS["tiny"], student_depth=depth)
    students, entry = distill(
        cfg, teacher, load_vae(out / "vae.safetensors").eval(), seed=3, log=lambda _: None
    )
    assert entry["student_depth"] == depth and sorted(students) == [1, 2, 4]
    first = entry["rounds"][0]["losses"]
    assert first[-1][1] < 0.8 * first[0][1], first  # the grown student learns the guided round
    for steps, student in students.items():  # every later round copies the grown student
        assert len(student.blocks) == depth, steps
        save_model(student, tmp_path / student_file(steps))
        assert load_dit(tmp_path / student_file(steps)).config.depth == depth
    assert "student_depth" not in _manifest(out)["stages"]["distill"]  # the default keeps the teacher's
    with pytest.raises(ValueError, match="student_depth 1 is below the teacher's"):
        distill(replace(cfg, student_depth=1), teacher, load_vae(out / "vae.safetensors"), 3, lambda _: None)


def test_eval_prints_a_row_per_run_and_records_the_table(run: tuple[Path, dict[str, str]]) -> None:
    out, outputs = run
    table = outputs["eval"]
    for row in ("teacher@50", "teacher@4", "student@4", "student@2", "student@1"):
        assert f"| {row} |" in table
    evaluation = _manifest(out)["eval"]
    assert evaluation["table"] in table and evaluation["prompts"] == 4
    # The evaluator's commit is recorded like every stage's: its tables compare only under the same code.
    assert evaluation["code_commit"] == _manifest(out)["stages"]["vae"]["code_commit"]
    assert 0.0 <= evaluation["rows"]["student@4"]["colour_accuracy"] <= 1.0
    assert "| object area |" in evaluation["table"].splitlines()[0]
    assert evaluation["rows"]["teacher@50"]["object_area_ratio"] >= 0.0


def test_the_engine_serves_the_weights_folder(run: tuple[Path, dict[str, str]]) -> None:
    out, _ = run
    engine = MiniEngine(checkpoint=out)
    assert engine.version == f"weights+{sha256_of(out / 'manifest.json')[:12]}"
    assert engine.dit.config.hidden == 64  # the tiny run's sizes come from the files, not the defaults
    assert sorted(engine.students) == [1, 2, 4]
    guidance = _manifest(out)["stages"]["distill"]["guidance_scale"]
    frames = engine.generate(REQUEST, ignore)
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, engine.generate(REQUEST, ignore))
    # A step count with a student, at the distilled guidance, runs that student in one pass a step;
    # another guidance or step count runs the teacher with classifier-free guidance.
    for steps in (1, 2, 4):
        assert engine.model_for(replace(REQUEST, num_steps=steps, guidance_scale=guidance)) == (
            engine.students[steps], 1.0)  # fmt: skip
    assert engine.model_for(replace(REQUEST, num_steps=4, guidance_scale=2.0)) == (engine.dit, 2.0)
    assert engine.model_for(replace(REQUEST, num_steps=8, guidance_scale=guidance)) == (engine.dit, guidance)
    teacher = MiniEngine(checkpoint=out / "teacher.safetensors")
    assert teacher.version.startswith("teacher-") and not teacher.students
    assert torch.equal(teacher.dit.final_layer.linear.weight, engine.dit.final_layer.linear.weight)
    assert not torch.equal(engine.students[4].final_layer.linear.weight, engine.dit.final_layer.linear.weight)
    # Every DiT of the folder samples on the grid the students were distilled on, the teacher file too.
    shift = _manifest(out)["stages"]["distill"]["flow_shift"]
    assert engine.flow_shift == teacher.flow_shift == DISTILL_PRESETS["tiny"].flow_shift == shift != 1.0
    # ...and guides the teacher with the rescaled guidance distilled into the students.
    rescale = _manifest(out)["stages"]["distill"]["guidance_rescale"]
    assert engine.guidance_rescale == teacher.guidance_rescale == rescale == RESCALE
    assert rescale != DISTILL_PRESETS["tiny"].guidance_rescale
    assert _manifest(out)["eval"]["teacher_guidance_rescale"] == RESCALE


def _copy_editing_distill(out: Path, to: Path, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A copy of the weights folder whose manifest's distill entry `edit` changed in place."""
    _copy(out, to)
    manifest = _manifest(to)
    edit(manifest["stages"]["distill"])
    (to / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_a_folder_distilled_before_the_shift_and_rescale_were_recorded_samples_unshifted_and_plain(
    run: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    out, _ = run

    def unrecord(distilled: dict[str, Any]) -> None:
        del distilled["flow_shift"], distilled["guidance_rescale"]

    _copy_editing_distill(out, tmp_path, unrecord)
    engine = MiniEngine(checkpoint=tmp_path)
    assert engine.flow_shift == 1.0 and engine.guidance_rescale == 0.0
    shifted = MiniEngine(checkpoint=out).generate(REQUEST, ignore)
    assert not np.array_equal(engine.generate(REQUEST, ignore), shifted)  # same weights, other grid


def test_the_recorded_rescale_guides_the_teacher_and_leaves_the_students_alone(
    run: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    out, _ = run
    manifest = _copy_editing_distill(out, tmp_path, lambda distilled: distilled.update(guidance_rescale=0.0))
    plain, rescaled = MiniEngine(checkpoint=tmp_path), MiniEngine(checkpoint=out)
    guidance = manifest["stages"]["distill"]["guidance_scale"]
    teacher_request = replace(REQUEST, num_steps=8, guidance_scale=guidance)
    student_request = replace(REQUEST, num_steps=4, guidance_scale=guidance)
    assert not np.array_equal(
        plain.generate(teacher_request, ignore), rescaled.generate(teacher_request, ignore)
    )
    np.testing.assert_array_equal(
        plain.generate(student_request, ignore), rescaled.generate(student_request, ignore)
    )


def test_students_sample_ancestrally_from_the_request_seed_and_the_teacher_does_not(
    run: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = run
    engine = MiniEngine(checkpoint=out)
    guidance = _manifest(out)["stages"]["distill"]["guidance_scale"]
    student, teacher = (replace(REQUEST, num_steps=n, guidance_scale=guidance) for n in (4, 8))
    ancestral, guided = engine.generate(student, ignore), engine.generate(teacher, ignore)
    np.testing.assert_array_equal(ancestral, engine.generate(student, ignore))  # one seed, one clip
    assert not np.array_equal(ancestral, engine.generate(replace(student, seed=8), ignore))
    monkeypatch.setattr(mini, "STUDENT_RENOISE", 0.0)
    assert not np.array_equal(ancestral, engine.generate(student, ignore))  # the re-noising is in use
    np.testing.assert_array_equal(guided, engine.generate(teacher, ignore))  # the teacher never re-noises


def test_a_changed_weights_file_is_refused(run: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    out, _ = run
    _copy(out, tmp_path)
    with (tmp_path / student_file(4)).open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(WeightsError, match="sha256"):
        MiniEngine(checkpoint=tmp_path)


def test_a_stage_without_its_inputs_says_what_to_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(model, ["distill", "--config", "tiny", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "reelforge model train-vae" in result.output


def test_dmd_fine_tunes_the_4_step_student_in_place_once_per_distillation(
    run: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    out, _ = run
    _copy(out, tmp_path)
    before = sha256_of(tmp_path / student_file(4))
    others = {n: sha256_of(tmp_path / student_file(n)) for n in (2, 1)}
    args = ["--config", "tiny", "--out", str(tmp_path), "--seed", "3"]
    result = CliRunner().invoke(model, ["dmd", *args])
    assert result.exit_code == 0, result.output
    manifest = _manifest(tmp_path)
    stage = manifest["stages"]["dmd"]
    assert (stage["from_sha256"], stage["student_steps"], stage["data_seed"]) == (before, 4, 3)
    # It trained the student the engine samples at the distilled guidance, and the files still verify.
    assert stage["guidance_scale"] == manifest["stages"]["distill"]["guidance_scale"]
    assert stage["guidance_rescale"] == manifest["stages"]["distill"]["guidance_rescale"] == RESCALE
    assert stage["renoise"] == mini.STUDENT_RENOISE
    assert [step for step, _ in stage["losses"]] == [1, 2, 3]
    assert manifest["files"][student_file(4)]["sha256"] == sha256_of(tmp_path / student_file(4)) != before
    assert {n: sha256_of(tmp_path / student_file(n)) for n in (2, 1)} == others
    tuned, distilled = load_dit(tmp_path / student_file(4)), load_dit(out / student_file(4))
    assert any(
        not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), distilled.state_dict().values())
    )
    engine = MiniEngine(checkpoint=tmp_path)
    request = replace(REQUEST, guidance_scale=stage["guidance_scale"])
    assert engine.model_for(request) == (engine.students[4], 1.0)
    assert engine.generate(request, ignore).shape == (16, 64, 64, 3)
    # A second fine-tune of the same student is refused; a new distillation replaces it and its record.
    again = CliRunner().invoke(model, ["dmd", *args])
    assert again.exit_code != 0 and "reelforge model distill" in again.output
    assert sha256_of(tmp_path / student_file(4)) == manifest["files"][student_file(4)]["sha256"]
    assert CliRunner().invoke(model, ["distill", *args]).exit_code == 0
    assert "dmd" not in _manifest(tmp_path)["stages"]
    # DMD2's GAN term is an option, recorded when on.
    assert "gan" not in stage and "without its GAN term" in stage["method"]
    result = CliRunner().invoke(model, ["dmd", *args, "--gan-weight", "0.01"])
    assert result.exit_code == 0, result.output
    gan = _manifest(tmp_path)["stages"]["dmd"]["gan"]
    assert (gan["weight"], len(gan["student_losses"])) == (0.01, 3)
    # --two-object-fraction sets the share of two-object captions the student is tuned on, and is recorded.
    assert stage["two_object_fraction"] == TWO_OBJECT_FRACTION
    tuned_on = {}
    for share in (0.0, 1.0):
        assert CliRunner().invoke(model, ["distill", *args]).exit_code == 0  # the same fresh student
        result = CliRunner().invoke(model, ["dmd", *args, "--two-object-fraction", str(share)])
        assert result.exit_code == 0, result.output
        assert _manifest(tmp_path)["stages"]["dmd"]["two_object_fraction"] == share
        tuned_on[share] = load_dit(tmp_path / student_file(4)).state_dict()
    assert any(not torch.equal(a, tuned_on[1.0][k]) for k, a in tuned_on[0.0].items())


def test_train_resume_goes_on_from_the_teacher_in_the_folder(
    run: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    out, _ = run
    _copy(out, tmp_path)
    fresh = tmp_path / "fresh"  # the VAE (and the manifest that vouches for it) alone: nothing to resume
    fresh.mkdir()
    _copy(out, fresh, ("vae.safetensors", MANIFEST))
    before = sha256_of(tmp_path / "teacher.safetensors")
    first = _manifest(tmp_path)["stages"]["teacher"]
    args = ["train", "--config", "tiny", "--seed", "4", "--steps", "10"]
    result = CliRunner().invoke(
        model, [*args, "--out", str(tmp_path), "--resume", "--lr", "5e-4", "--warmup", "2"]
    )
    assert result.exit_code == 0, result.output
    stage = _manifest(tmp_path)["stages"]["teacher"]
    assert (stage["steps"], stage["data_seed"], stage["lr"], stage["warmup"]) == (10, 4, 5e-4, 2)
    resumed = stage["resumed_from"]
    assert resumed["sha256"] == before and resumed["steps"] == first["steps"] == 40
    assert "losses" not in resumed and resumed["grounding_weight"] == GROUNDING
    after = sha256_of(tmp_path / "teacher.safetensors")
    assert after != before
    # Refused before any training: nothing to resume, or a teacher of another architecture.
    nothing = CliRunner().invoke(model, [*args, "--out", str(fresh), "--resume"])
    assert nothing.exit_code != 0 and "reelforge model train --out" in nothing.output
    other = CliRunner().invoke(model, ["train", "--config", "default", "--out", str(tmp_path), "--resume"])
    assert other.exit_code != 0 and "resume it with the config it was trained with" in other.output
    assert sha256_of(tmp_path / "teacher.safetensors") == after
    # It starts where the first run ended: its first window's loss is below a fresh run's.
    result = CliRunner().invoke(model, [*args, "--out", str(fresh), "--lr", "5e-4", "--warmup", "2"])
    assert result.exit_code == 0, result.output
    new = _manifest(fresh)["stages"]["teacher"]
    assert "resumed_from" not in new
    assert stage["losses"][0][1] < 0.8 * new["losses"][0][1], (stage["losses"], new["losses"])
