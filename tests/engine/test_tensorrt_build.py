"""TensorRT build: the per-bucket batch profiles (everywhere) and a real build (only where tensorrt imports;
TensorRT cannot be installed on this project's machines, so that test is skipped here)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from reelforge.engine.tensorrt_build import batch_profiles, build_plan


def bucket_graph(path: Path, latent: list[int | str]) -> Path:
    """A one-node ONNX file shaped like a DiT bucket: latent (batch, Z, T, H, W) and time (batch,)."""
    inputs = [helper.make_tensor_value_info("latent", TensorProto.FLOAT, latent),
              helper.make_tensor_value_info("time", TensorProto.FLOAT, ["batch"])]
    output = helper.make_tensor_value_info("velocity", TensorProto.FLOAT, latent)
    graph = helper.make_graph([helper.make_node("Identity", ["latent"], ["velocity"])], "bucket", inputs, [output])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_profile_spans_the_batch_axis_and_keeps_the_bucket_shape(tmp_path: Path) -> None:
    path = bucket_graph(tmp_path / "dit.onnx", ["batch", 16, 4, 16, 16])
    assert batch_profiles(path, max_batch=16, opt_batch=4) == {
        "latent": ((1, 16, 4, 16, 16), (4, 16, 4, 16, 16), (16, 16, 4, 16, 16)),
        "time": ((1,), (4,), (16,)),
    }


def test_a_symbolic_axis_besides_batch_is_refused(tmp_path: Path) -> None:
    path = bucket_graph(tmp_path / "dit.onnx", ["batch", 16, "frames", 16, 16])
    with pytest.raises(ValueError, match="axis 2 is symbolic"):
        batch_profiles(path, max_batch=16, opt_batch=4)
    with pytest.raises(ValueError, match="opt_batch"):
        batch_profiles(bucket_graph(tmp_path / "ok.onnx", ["batch", 16]), max_batch=4, opt_batch=8)


def test_builds_a_plan_where_tensorrt_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT cannot be installed on this project's machines")
    path = bucket_graph(tmp_path / "dit.onnx", ["batch", 16, 4, 16, 16])
    build_plan(path, tmp_path / "dit.plan", "fp16", max_batch=8, opt_batch=2, workspace_gib=1)
    assert (tmp_path / "dit.plan").stat().st_size > 0
