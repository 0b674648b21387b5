"""TensorRT engines from the ONNX files engine/export.py writes: the production GPU path.

NOT RUN HERE: TensorRT cannot be installed on any machine of this project (no NVIDIA registry, and the
GPU machines lent to some sessions have no TensorRT), so no figure anywhere comes from this file. Its
test builds a tiny engine where `import tensorrt` works and is skipped elsewhere.

    python -m reelforge.engine.tensorrt_build --onnx onnx/ --out plans/ --precision fp16 --max-batch 16

One plan per ONNX file. Every ONNX file is one shape bucket (the DiT and VAE decoder are exported per
frames x height x width), so each plan gets one optimisation profile over the batch axis only:
min 1, opt --opt-batch, max --max-batch, the other dimensions fixed at the bucket's. FP16 or BF16 are
builder flags over float32 graphs (the time embedding stays float32 in the ONNX graph; TensorRT may
still lower it: check the velocity error of a built plan before serving it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

Shape = tuple[int, ...]
PRECISIONS = ("fp32", "fp16", "bf16")


def batch_profiles(onnx_path: Path, max_batch: int, opt_batch: int) -> dict[str, tuple[Shape, Shape, Shape]]:
    """{input name: (min, opt, max) shape}: the batch axis (the ONNX file's only symbolic one) from 1 to
    max_batch, every other axis as exported. ValueError for an axis that is neither."""
    import onnx

    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt_batch <= max_batch, got {opt_batch} and {max_batch}")
    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    profiles = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        rest = []
        for axis, dim in enumerate(dims[1:], start=1):
            if not dim.HasField("dim_value"):
                raise ValueError(f"{onnx_path.name}: {value.name} axis {axis} is symbolic; export per shape bucket")
            rest.append(dim.dim_value)
        profiles[value.name] = ((1, *rest), (opt_batch, *rest), (max_batch, *rest))
    return profiles


def build_plan(onnx_path: Path, plan_path: Path, precision: str, max_batch: int, opt_batch: int,
               workspace_gib: int = 8) -> None:
    """Parse the ONNX file, build a serialized engine with one batch profile, write it to plan_path."""
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10 and later
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if precision != "fp32":
        config.set_flag(getattr(trt.BuilderFlag, precision.upper()))
    profile = builder.create_optimization_profile()
    for name, (smallest, usual, largest) in batch_profiles(onnx_path, max_batch, opt_batch).items():
        profile.set_shape(name, smallest, usual, largest)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {onnx_path.name} (see its log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="folder of ONNX files from engine/export.py")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--opt-batch", type=int, default=4)
    args = parser.parse_args(argv)
    for onnx_path in sorted(args.onnx.glob("*.onnx")):
        build_plan(onnx_path, args.out / f"{onnx_path.stem}.plan", args.precision, args.max_batch, args.opt_batch)
        print(f"{onnx_path.stem}.plan")


if __name__ == "__main__":
    main()
