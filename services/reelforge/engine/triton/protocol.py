"""The contract between the GPU worker's TritonEngine and the model repository: model names and the
pipeline's REQUEST payload. Imports no torch, so the client side stays a thin process."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from reelforge.engine.interface import GenerationRequest

REPOSITORY = Path(__file__).parent / "repository"
PIPELINE_MODEL = "reelforge_pipeline"
STAGE_MODELS = ("text_encoder", "dit", "vae_decoder")


def encode_request(request: GenerationRequest) -> bytes:
    return json.dumps(asdict(request)).encode()


def decode_request(data: bytes) -> GenerationRequest:
    """The pipeline's REQUEST input -> GenerationRequest; ValueError says which field is wrong."""
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"REQUEST is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("REQUEST must be a JSON object")
    kinds = {f.name: f.type for f in fields(GenerationRequest)}
    missing = sorted(set(kinds) - set(raw))
    if missing:
        raise ValueError(f"REQUEST lacks {', '.join(missing)}")
    casts = {"str": str, "int": int, "float": float}
    try:
        return GenerationRequest(**{name: casts[str(kind)](raw[name]) for name, kind in kinds.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"REQUEST has a field of the wrong type: {exc}") from None
