"""Jobs per minute through the whole platform with 1, 2 and 4 jobs in flight: the in-process engine
against Triton with dynamic batching, same model, same steps, in one run (a script, not a test).

    .venv/bin/python benchmarks/triton_batching.py [--jobs 6] [--rounds 3] [--concurrency 1 2 4] [--steps 4]

Two local stacks run side by side (Redis, SeaweedFS, gateway, relay, GPU, post-process and webhook
workers; the second also tritonserver) and serve the same 64x64, 16-frame jobs at the API's default
guidance. In-process: one GPU worker holding one engine, as deployed (one per GPU). Triton: as many GPU
worker processes as the most jobs in flight, each only a client, and one server that batches their DiT
steps. A level keeps `c` jobs in flight (a new one is created as one ends) until --jobs have ended; each
round runs every level on both backends one after the other, so drift in a shared machine's load hits
both alike, and the figures are medians over rounds.

Reports per backend and level: jobs per minute (ended jobs / wall time from the first create to the last
completion), batching gain = throughput(c) / (c x throughput(1)), the median job latency (create to
completed, seen by polling every 50 ms), and for Triton the dit model's mean batch size (rows /
executions) and mean queue time from Triton's own statistics. Triton overhead per step: one job alone,
MiniEngine in this process against TritonEngine on the stack's server, alternating, median time between
the first denoising event and the decoding event divided by the steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from reelforge.devstack.processes import free_port
from reelforge.devstack.stack import Stack, StackConfig, start_stack

TERMINAL = {"completed", "failed", "cancelled"}


def run_level(stack: Stack, concurrency: int, jobs: int, steps: int) -> dict[str, Any]:
    """Keep `concurrency` jobs in flight until `jobs` have ended; wall time and each job's record."""
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    remaining = [jobs]
    headers = {"Authorization": f"Bearer {stack.info['api_key']}"}

    def worker(index: int) -> None:
        with httpx.Client(base_url=stack.info["gateway_url"], headers=headers, timeout=30) as api:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                    seed = remaining[0]
                body = {"prompt": f"a red circle moving left, variant {seed}", "size": "64x64", "seconds": "2",
                        "fps": 8, "num_steps": steps, "seed": seed}
                sent = time.perf_counter()
                created = api.post("/v1/videos", json=body)
                created.raise_for_status()
                video = created.json()
                while video["status"] not in TERMINAL:
                    time.sleep(0.05)
                    video = api.get(f"/v1/videos/{video['id']}").json()
                if video["status"] != "completed":
                    raise RuntimeError(f"job {video['id']} ended {video['status']}: {video.get('error')}")
                with lock:
                    records.append({**video, "latency_s": time.perf_counter() - sent})

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "jobs_per_min": len(records) / wall * 60, "records": records}


def dit_counters(stack: Stack) -> dict[str, float]:
    from reelforge.engine.triton.client import model_statistics

    stats = model_statistics(stack.info["triton_grpc_url"], "dit")
    return {"rows": float(stats["inference_count"]), "executions": float(stats["execution_count"]),
            "queue_ns": float(stats["inference_stats"]["queue"]["ns"]),
            "requests": float(stats["inference_stats"]["success"]["count"])}


def median_job_s(records: list[dict[str, Any]]) -> float:
    return statistics.median(r["latency_s"] for r in records)


def start(backend: str, gpu_concurrency: int) -> Stack:
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    return start_stack(StackConfig(data_dir=data_dir, gateway_port=free_port(), engine_backend=backend,
                                   gpu_concurrency=gpu_concurrency))


def measure_level(stack: Stack, backend: str, level: int, jobs: int, steps: int) -> dict[str, Any]:
    before = dit_counters(stack) if backend == "triton" else None
    result = run_level(stack, level, jobs, steps)
    if before is not None:
        after = dit_counters(stack)
        delta = {k: after[k] - before[k] for k in after}
        result["mean_batch"] = delta["rows"] / delta["executions"]
        result["queue_ms"] = delta["queue_ns"] / delta["requests"] / 1e6
    return result


def step_overhead(stack: Stack, steps: int, runs: int) -> tuple[float, float]:
    """Median seconds per denoising step of one job, MiniEngine in this process vs TritonEngine against
    the stack's server, alternating, same request (the engine-level cost of going through Triton)."""
    from reelforge.engine.interface import GenerationRequest, StepEvent
    from reelforge.engine.mini import load_engine
    from reelforge.engine.triton.client import TritonEngine

    engines = {"inprocess": load_engine(), "triton": TritonEngine(stack.info["triton_grpc_url"])}
    request = GenerationRequest(prompt="a red circle moving left", negative_prompt="", width=64, height=64,
                                num_frames=16, fps=8, num_steps=steps, guidance_scale=1.0, seed=0)
    per_step: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            marks: dict[str, float] = {}

            def mark(event: StepEvent, marks: dict[str, float] = marks) -> None:
                marks.setdefault(event.phase, time.perf_counter())

            engine.generate(request, mark)
            per_step[name].append((marks["decoding"] - marks["denoising"]) / steps)
    return statistics.median(per_step["inprocess"]), statistics.median(per_step["triton"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=6, help="jobs per level and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; backends alternate within each")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--overhead-runs", type=int, default=10)
    args = parser.parse_args()

    print(f"# {platform.node()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 64x64x16, {args.steps} steps, "
          f"{args.rounds} rounds x {args.jobs} jobs per level and backend")
    stacks = {"inprocess": start("inprocess", 1), "triton": start("triton", max(args.concurrency))}
    try:
        for stack in stacks.values():
            run_level(stack, 1, 2, args.steps)  # warm-up: first calls load lazy kernels and caches
        rounds: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for level in args.concurrency:
                for backend, stack in stacks.items():
                    rounds.setdefault((backend, level), []).append(
                        measure_level(stack, backend, level, args.jobs, args.steps))
        alone = step_overhead(stacks["triton"], args.steps, args.overhead_runs)
    finally:
        for stack in stacks.values():
            stack.stop()
    report(rounds, args.concurrency, alone)


def report(rounds: dict[tuple[str, int], list[dict[str, Any]]], levels: list[int], alone: tuple[float, float]) -> None:
    def median_of(backend: str, level: int, key: str) -> float:
        return statistics.median(r[key] for r in rounds[(backend, level)])

    print("| backend | jobs in flight | jobs/min (median of rounds) | batching gain | median job s | "
          "dit mean batch | dit queue ms |")
    print("|---|---|---|---|---|---|---|")
    for backend in ("inprocess", "triton"):
        one = median_of(backend, levels[0], "jobs_per_min")
        for level in levels:
            rate = median_of(backend, level, "jobs_per_min")
            latency = median_job_s([rec for r in rounds[(backend, level)] for rec in r["records"]])
            extra = (f"{median_of(backend, level, 'mean_batch'):.2f} | {median_of(backend, level, 'queue_ms'):.1f}"
                     if backend == "triton" else "– | –")
            print(f"| {backend} | {level} | {rate:.1f} | {rate / (level * one):.2f} | {latency:.2f} | {extra} |")
    for level in levels:
        ratio = median_of("triton", level, "jobs_per_min") / median_of("inprocess", level, "jobs_per_min")
        print(f"Triton / in-process jobs per minute at {level} in flight: {ratio:.2f}")
    print(f"denoising step of a job alone (engine level, alternating): in-process {alone[0] * 1000:.1f} ms, "
          f"Triton {alone[1] * 1000:.1f} ms; Triton overhead {(alone[1] - alone[0]) * 1000:.1f} ms per step")


if __name__ == "__main__":
    main()
