"""Trained weights on disk: one safetensors file per model and a manifest.json beside them.

A weights folder is both what training writes (`reelforge model ... --out DIR`) and what the engine
loads (`MiniEngine(checkpoint=DIR)`), so the weights shipped in the package are exactly a training
run's output. Each file carries its model's config in the safetensors metadata, so loading needs no code
that knows the sizes a run used. The manifest records, per stage, the code commit, data seed, steps,
losses and metrics, plus the eval table and the sha256 of every weights file, checked on load.

Files: vae.safetensors, teacher.safetensors, student_<N>step.safetensors (one per distilled step count).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from reelforge.engine.dit import DiTConfig, VideoDiT
from reelforge.engine.vae import VAEConfig, VideoVAE

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
VAE_FILE = "vae.safetensors"
TEACHER_FILE = "teacher.safetensors"
DIT_DTYPE = torch.float16  # halves the DiTs on disk (the package ships <= 30 MB); they run in float32
VAE_DTYPE = torch.float32  # the decoder draws every pixel: not worth 2.5 MB of its precision


Model = TypeVar("Model", VideoDiT, VideoVAE)


class WeightsError(RuntimeError):
    """A weights folder is missing a file, or a file does not match its manifest; says what to run."""


def student_file(steps: int) -> str:
    return f"student_{steps}step.safetensors"


# ---- one model per file --------------------------------------------------------------------------


def save_model(model: VideoDiT | VideoVAE, path: Path) -> None:
    dtype = VAE_DTYPE if isinstance(model, VideoVAE) else DIT_DTYPE
    tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in model.state_dict().items()}
    kind = "vae" if isinstance(model, VideoVAE) else "dit"
    save_file(tensors, str(path), metadata={"kind": kind, "config": json.dumps(asdict(model.config))})


def load_dit(path: Path) -> VideoDiT:
    config, tensors = _read(path, "dit")
    return _build(lambda: VideoDiT(DiTConfig(**config)), tensors)


def load_vae(path: Path) -> VideoVAE:
    config, tensors = _read(path, "vae")
    return _build(lambda: VideoVAE(VAEConfig(**config)), tensors)


def _read(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise WeightsError(f"no weights at {path}")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("kind") != kind:
            raise WeightsError(f"{path} holds {metadata.get('kind')!r} weights, not {kind!r}")
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    # JSON has no tuples; every list in these configs is a tuple field (patch, channels)
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(metadata["config"]).items()}
    return config, tensors


def _build(construct: Callable[[], Model], tensors: dict[str, torch.Tensor]) -> Model:
    with torch.random.fork_rng(devices=[]):  # the throw-away initialisation leaves the caller's RNG alone
        model = construct()
    model.load_state_dict(tensors)  # copy_ casts the float16 tensors into the float32 parameters
    return model


# ---- the manifest --------------------------------------------------------------------------------


def code_commit() -> str | None:
    """HEAD of the checkout this code runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "stages": {}, "files": {}}
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def record(directory: Path, key: str, entry: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Sets manifest[stages][key] (or manifest["eval"] for key "eval"), removes the stages named in
    `drop`, re-hashes every weights file in the folder and writes the manifest atomically, so it always
    describes the files beside it."""
    manifest = read_manifest(directory)
    for stale in drop:
        manifest["stages"].pop(stale, None)
    # The evaluator is code too: a table is only comparable under the same commit.
    stamped = {"code_commit": code_commit(), **entry}
    if key == "eval":
        manifest["eval"] = stamped
    else:
        manifest["stages"][key] = stamped
    manifest["files"] = {
        p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size}
        for p in sorted(directory.glob("*.safetensors"))
    }
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def verified(path: Path) -> Path:
    """path, after checking its sha256 against the manifest beside it."""
    _verified_sha256(path)
    return path


def _verified_sha256(path: Path) -> str:
    if not path.is_file():
        raise WeightsError(f"no {path.name} in {path.parent}: run the training stage that writes it")
    expected = read_manifest(path.parent)["files"].get(path.name, {}).get("sha256")
    if expected is None:
        raise WeightsError(f"{path.name} is not listed in {path.parent / MANIFEST}")
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsError(
            f"{path} does not match the sha256 in its manifest: the file changed after training"
        )
    return actual


# ---- what the engine loads -----------------------------------------------------------------------


def is_weights_path(path: Path) -> bool:
    """A weights folder, or one DiT file inside one (anything else is a torch.save'd state dict)."""
    return path.is_dir() or path.suffix == ".safetensors"


@dataclass
class EngineWeights:
    """What a weights folder serves: the teacher (any step count, with CFG), the distilled students by
    step count (guidance folded in at `distilled_guidance`), the VAE with its latent statistics."""

    teacher: VideoDiT | None
    students: dict[int, VideoDiT]
    vae: VideoVAE
    distilled_guidance: float | None  # None when the folder holds no students
    version: str
    flow_shift: float = 1.0  # time shift of every sampling grid: the one the students were distilled on
    guidance_rescale: float = 0.0  # phi of the teacher's guided sampling: the one distilled into the students


def load_engine_weights(path: Path) -> EngineWeights:
    """Every model of a weights folder, each checked against the manifest; or, for one DiT file, that
    DiT alone as the teacher (it serves every step count)."""
    if not path.is_dir():
        version = f"{path.stem}-{_verified_sha256(path)[:12]}"
        manifest = read_manifest(path.parent)
        vae = load_vae(verified(path.parent / VAE_FILE))
        shift, rescale = _flow_shift(manifest), _guidance_rescale(manifest)
        return EngineWeights(load_dit(path), {}, vae, None, version, shift, rescale)
    manifest = read_manifest(path)
    teacher = load_dit(verified(path / TEACHER_FILE)) if (path / TEACHER_FILE).is_file() else None
    students = {}
    for file in sorted(path.glob("student_*step.safetensors")):
        students[int(file.stem.removeprefix("student_").removesuffix("step"))] = load_dit(verified(file))
    if teacher is None and not students:
        raise WeightsError(f"no {TEACHER_FILE} or student_<N>step.safetensors in {path}")
    distilled = manifest["stages"].get("distill", {}).get("guidance_scale") if students else None
    # The version names the whole set: the hash of the manifest, which holds every file's sha256.
    version = f"weights+{sha256_of(path / MANIFEST)[:12]}"
    vae = load_vae(verified(path / VAE_FILE))
    distilled_guidance = None if distilled is None else float(distilled)
    shift, rescale = _flow_shift(manifest), _guidance_rescale(manifest)
    return EngineWeights(teacher, students, vae, distilled_guidance, version, shift, rescale)


def _flow_shift(manifest: dict[str, Any]) -> float:
    """The distillation's grid shift, which the folder's teacher samples with too; 1 (no shift) for a
    folder distilled before it was recorded, or never distilled."""
    return _distilled_setting(manifest, "flow_shift", 1.0)


def _guidance_rescale(manifest: dict[str, Any]) -> float:
    """The rescaled-guidance phi distilled into the students, which the folder's teacher samples with
    too; 0 (plain classifier-free guidance) for a folder distilled before it was recorded."""
    return _distilled_setting(manifest, "guidance_rescale", 0.0)


def _distilled_setting(manifest: dict[str, Any], key: str, default: float) -> float:
    return float(manifest["stages"].get("distill", {}).get(key, default))
