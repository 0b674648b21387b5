"""ONNX export of the text encoder, the DiTs and the VAE decoder, checked with onnxruntime against torch."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest
import torch

from reelforge.engine.export import MAX_RELATIVE_ERROR, Bucket, check_against_torch, export_engine, graphs
from reelforge.engine.mini import MiniEngine
from tests.engine.perturbed import STUDENT_STEPS, perturbed_weights

BUCKET = Bucket(num_frames=8, height=32, width=32)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> MiniEngine:
    return MiniEngine(checkpoint=perturbed_weights(tmp_path_factory.mktemp("weights")))


@pytest.fixture(scope="module")
def exported(engine: MiniEngine, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    out = tmp_path_factory.mktemp("onnx")
    return out, export_engine(engine, out, [BUCKET])


def test_every_network_exports_with_a_dynamic_batch_and_matches_torch(exported: tuple[Path, dict[str, float]]) -> None:
    out, errors = exported
    assert set(errors) == {"text_encoder.onnx", f"dit_0_{BUCKET}.onnx", f"dit_{STUDENT_STEPS}_{BUCKET}.onnx",
                           f"vae_decoder_{BUCKET}.onnx"}
    # checked at 3 rows after a trace at 2: the batch axis is not baked in
    assert all(0 < error < MAX_RELATIVE_ERROR for error in errors.values()), errors
    for name in errors:
        model = onnx.load(str(out / name), load_external_data=False)
        onnx.checker.check_model(model)
        for value in (*model.graph.input, *model.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param, f"{name}: {value.name} has a fixed batch"


def test_the_check_catches_a_graph_that_does_not_match_torch(
    engine: MiniEngine, exported: tuple[Path, dict[str, float]]
) -> None:
    out, _ = exported
    dit_graph = next(g for g in graphs(engine, [BUCKET]) if g.name == f"dit_0_{BUCKET}")
    original = {k: v.clone() for k, v in dit_graph.module.state_dict().items()}
    try:
        with torch.no_grad():
            dit_graph.module.final_layer.linear.weight.mul_(1.01)  # torch moves on, the ONNX file does not
        assert check_against_torch(dit_graph, out / f"{dit_graph.name}.onnx") > MAX_RELATIVE_ERROR
    finally:
        dit_graph.module.load_state_dict(original)


def test_bucket_parses_frames_height_width() -> None:
    assert Bucket.parse("16x64x128") == Bucket(16, 64, 128) and str(Bucket(16, 64, 128)) == "16x64x128"
