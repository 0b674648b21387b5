"""Warm latency of one clip from the built-in engine, on CPU, and the process's peak memory.

    .venv/bin/python benchmarks/engine_latency.py [--threads 2] [--runs 20] [--steps 4 2 1 50]

Loads the shipped weights the way a GPU-stage worker does (one engine per process), warms up, then
times `MiniEngine.generate` for a 64x64, 16-frame clip at the API's default guidance: prompt encoding,
every denoising step and the VAE decode to uint8 frames, as a worker runs them. Prints the median and
90th percentile per step count, the share of each phase at the median, and the peak RSS of this process
(ru_maxrss: everything loaded, the text encoder included). The prompts cycle through held-out ones.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from dataclasses import replace
from functools import partial

import torch

from reelforge.core.catalog import REELFORGE_MINI
from reelforge.engine.interface import GenerationRequest, StepEvent
from reelforge.engine.mini import MiniEngine
from reelforge.training.evaluate import heldout_prompts


def _mark(marks: dict[str, float], event: StepEvent) -> None:
    marks.setdefault(event.phase, time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 2, 1])
    args = parser.parse_args()

    started = time.perf_counter()
    engine = MiniEngine(threads=args.threads)
    load_s = time.perf_counter() - started
    prompts = heldout_prompts(args.runs, seed=0)
    base = GenerationRequest(
        prompt=prompts[0], negative_prompt="", width=64, height=64, num_frames=16, fps=8,
        num_steps=4, guidance_scale=REELFORGE_MINI.default_guidance_scale, seed=0,
    )  # fmt: skip
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, weights {engine.version}, load {load_s:.2f} s")  # fmt: skip
    print("| steps | model | p50 s | p90 s | encode | denoise | decode |")
    print("|---|---|---|---|---|---|---|")
    for steps in args.steps:
        request = replace(base, num_steps=steps)
        dit, guidance = engine.model_for(request)
        model = "student" if dit is not engine.dit else f"teacher, guidance {guidance:g}"
        for i in range(args.warmup):
            engine.generate(replace(request, seed=10_000 + i), lambda e: None)
        totals: list[float] = []
        phases: list[dict[str, float]] = []
        for i in range(args.runs):
            marks: dict[str, float] = {}
            t0 = time.perf_counter()
            engine.generate(replace(request, prompt=prompts[i], seed=i), partial(_mark, marks))
            t1 = time.perf_counter()
            totals.append(t1 - t0)
            phases.append({
                "encode": marks["denoising"] - marks["encoding_prompt"],
                "denoise": marks["decoding"] - marks["denoising"],
                "decode": t1 - marks["decoding"],
            })  # fmt: skip
        median = statistics.median(totals)
        p90 = statistics.quantiles(totals, n=10)[-1] if len(totals) >= 2 else median
        share = {k: statistics.median(p[k] for p in phases) for k in ("encode", "denoise", "decode")}
        print(f"| {steps} | {model} | {median:.3f} | {p90:.3f} | "
              + " | ".join(f"{v:.3f}" for v in share.values()) + " |")  # fmt: skip
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
