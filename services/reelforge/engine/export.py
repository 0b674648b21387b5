"""ONNX export of the engine's three networks, for compiled runtimes (onnxruntime, TensorRT).

Each graph has a dynamic batch axis, so a server batches rows of concurrent jobs into one call. The DiT
and the VAE decoder are exported per shape bucket (frames x height x width): the latent grid sets the
rotary tables and the attention length, and a compiled engine is tuned per shape anyway (TensorRT
builds one optimisation profile per bucket, engine/tensorrt_build.py). The text encoder's length is
fixed by its tokenizer (max_length), so it has one graph. Tokenization stays in Python.

    python -m reelforge.engine.export --out onnx/ --bucket 16x64x64 --bucket 16x128x64

writes text_encoder.onnx, dit_<key>_<bucket>.onnx (key 0 = teacher, N = the N-step student) and
vae_decoder_<bucket>.onnx, and checks every file against torch with onnxruntime on random inputs at a
batch size other than the one traced (check_against_torch: the relative error it reports is
||onnx - torch|| / ||torch||).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reelforge.engine.mini import MiniEngine, load_engine
from reelforge.engine.vae import VideoVAE

TRACE_BATCH = 2  # traced at 2 and checked at 3: a batch axis fixed by the trace would fail the check
CHECK_BATCH = 3
MAX_BATCH = 64
MAX_RELATIVE_ERROR = 1e-4  # float32 graphs; measured errors are around 1e-6 (docs/triton.md)


@dataclass(frozen=True)
class Bucket:
    """A clip shape the server accepts: every job of this shape shares graphs and batches."""

    num_frames: int
    height: int
    width: int

    @classmethod
    def parse(cls, text: str) -> Bucket:
        """'16x64x64' (frames x height x width)."""
        frames, height, width = (int(part) for part in text.split("x"))
        return cls(frames, height, width)

    def __str__(self) -> str:
        return f"{self.num_frames}x{self.height}x{self.width}"


class TextEncoderGraph(nn.Module):
    """The exported part of TextEncoder: token ids (B, L) and mask (B, L) -> token states (B, L, 384)."""

    def __init__(self, engine: MiniEngine) -> None:
        super().__init__()
        self.bert = engine.text_encoder.bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()


class LatentDecoder(nn.Module):
    """The vae_decoder stage: DiT-space latents (B, Z, T/4, H/4, W/4) -> video (B, 3, T, H, W)."""

    def __init__(self, vae: VideoVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self.vae.denormalize(latents))


@dataclass(frozen=True)
class Graph:
    """One network to export: its module, named example inputs (batch first) and output name."""

    name: str
    module: nn.Module
    make_inputs: Callable[[int], dict[str, torch.Tensor]]  # batch -> inputs
    output: str


def graphs(engine: MiniEngine, buckets: list[Bucket]) -> list[Graph]:
    text_len, vocab = engine.text_encoder.config.max_length, engine.text_encoder.bert.config.vocab_size
    generator = torch.Generator().manual_seed(0)

    def tokens(batch: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (batch, text_len), generator=generator)  # (B, L)
        mask = (torch.arange(text_len)[None] < torch.randint(1, text_len + 1, (batch, 1), generator=generator))
        return {"input_ids": ids, "attention_mask": mask.long()}  # (B, L) each

    found = [Graph("text_encoder", TextEncoderGraph(engine), tokens, "text")]
    for bucket in buckets:
        latent = engine.vae.latent_shape(bucket.num_frames, bucket.height, bucket.width)  # (Z, T/4, H/4, W/4)

        def dit_inputs(batch: int, latent: tuple[int, ...] = latent) -> dict[str, torch.Tensor]:
            mask = torch.arange(text_len)[None] < torch.randint(1, text_len + 1, (batch, 1), generator=generator)
            return {
                "latent": torch.randn((batch, *latent), generator=generator),  # (B, Z, T/4, H/4, W/4)
                "time": torch.rand(batch, generator=generator),  # (B,)
                "text": torch.randn(batch, text_len, engine.text_encoder.config.dim, generator=generator),
                "mask": mask,  # (B, L)
            }

        def vae_inputs(batch: int, latent: tuple[int, ...] = latent) -> dict[str, torch.Tensor]:
            return {"latents": torch.randn((batch, *latent), generator=generator)}

        for key, dit in engine.dits.items():
            found.append(Graph(f"dit_{key}_{bucket}", dit, dit_inputs, "velocity"))
        found.append(Graph(f"vae_decoder_{bucket}", LatentDecoder(engine.vae), vae_inputs, "video"))
    return found


def export_graph(graph: Graph, path: Path) -> None:
    inputs = graph.make_inputs(TRACE_BATCH)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    torch.onnx.export(
        graph.module.eval(),
        tuple(inputs.values()),
        str(path),
        input_names=list(inputs),
        output_names=[graph.output],
        dynamic_shapes=tuple({0: batch} for _ in inputs),
        dynamo=True,
        external_data=False,
        verbose=False,
    )


@torch.inference_mode()
def check_against_torch(graph: Graph, path: Path, batch: int = CHECK_BATCH) -> float:
    """||onnxruntime - torch|| / ||torch|| on fresh random inputs at `batch` rows."""
    import onnxruntime as ort

    inputs = graph.make_inputs(batch)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
    want = graph.module(*inputs.values()).float().numpy()
    if got.shape != want.shape:
        raise ValueError(f"{path.name}: onnxruntime gave {got.shape}, torch {want.shape}")
    if not np.any(want):  # e.g. a DiT at its zero-initialised output layer: nothing to compare
        raise ValueError(f"{path.name}: torch output is all zeros, so the check would prove nothing")
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def export_engine(engine: MiniEngine, out_dir: Path, buckets: list[Bucket]) -> dict[str, float]:
    """Export and check every graph; {file name: relative error}. Raises if one exceeds the bound."""
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = {}
    for graph in graphs(engine, buckets):
        path = out_dir / f"{graph.name}.onnx"
        export_graph(graph, path)
        errors[path.name] = check_against_torch(graph, path)
        if errors[path.name] > MAX_RELATIVE_ERROR:
            raise ValueError(f"{path.name}: relative error {errors[path.name]:.2e} > {MAX_RELATIVE_ERROR:.0e}")
    return errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bucket", type=Bucket.parse, action="append", required=True,
                        help="frames x height x width, e.g. 16x64x64; repeat for more buckets")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: the engine's)")
    args = parser.parse_args(argv)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    for name, error in export_engine(load_engine(checkpoint=args.weights), args.out, args.bucket).items():
        print(f"{name}\trelative error {error:.2e}")


if __name__ == "__main__":
    main()
