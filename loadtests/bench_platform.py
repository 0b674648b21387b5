"""Platform benchmark (a script, not a test): gateway create latency and throughput against a bare
FastAPI + one Redis write baseline, queue overhead and platform overhead, all in one run.

    .venv/bin/python loadtests/bench_platform.py [--rate 200] [--seconds 10] [--jobs 30]

Prints a markdown table to paste into docs/performance.md with the machine and date.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from reelforge.core.store import JobStore
from reelforge.devstack.processes import ManagedProcess, free_port
from reelforge.devstack.stack import StackConfig, start_stack

BODY = {"prompt": "a red circle moving left on a black background", "num_steps": 1}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def open_loop(url: str, headers: dict[str, str], rate: float, seconds: float) -> dict[str, float]:
    """Send at a fixed rate regardless of answers (no coordinated omission); latency per request."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(headers=headers, timeout=10, limits=limits) as client:
        async def one(scheduled: float) -> None:
            nonlocal errors
            response = await client.post(url, json=BODY)
            latencies.append(time.perf_counter() - scheduled)
            errors += response.status_code != 200

        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    ms = [x * 1000 for x in latencies]
    return {"p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "errors": errors, "sent": len(ms)}


async def closed_loop(url: str, headers: dict[str, str], concurrency: int, seconds: float) -> float:
    """Python closed loop, used only to warm up: it saturates at a few hundred req/s on 2 cores."""
    """Requests per second with `concurrency` clients sending back to back."""
    done = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=10, limits=limits) as client:
        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                response = await client.post(url, json=BODY)
                done += response.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def latency(url: str, headers: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    asyncio.run(closed_loop(url, headers, 8, 2))  # warm up connections and code paths
    return asyncio.run(open_loop(url, headers, args.rate, args.seconds))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_rps(url: str, headers: dict[str, str], concurrency: int, seconds: float, work: Path,
            pid: int) -> tuple[float, float]:
    """Requests/s measured by wrk (C, one thread): a Python client saturates long before the gateway.
    Also the server process's CPU microseconds per request over the same run."""
    script = work / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(BODY))}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:.0f}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    served = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, cpu * 1e6 / served


def throughput_rounds(targets: dict[str, tuple[str, dict[str, str], int]], args: argparse.Namespace,
                      work: Path) -> dict[str, tuple[float, float]]:
    """Alternate the servers round by round so drift on a shared machine hits both alike; medians of
    requests/s and of server CPU µs per request."""
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (url, headers, pid) in targets.items():
            rounds[name].append(wrk_rps(url, headers, args.concurrency, args.seconds / 2, work, pid))
    return {name: (statistics.median(r for r, _ in values), statistics.median(c for _, c in values))
            for name, values in rounds.items()}


def bench_create(args: argparse.Namespace, work: Path) -> tuple[dict[str, float], dict[str, float]]:
    # No workers drain these jobs: the limits that would refuse them (on by default) are turned off, so the
    # benchmark measures the create path with every check in it but no refusals.
    unlimited = {"REELFORGE_RATE_LIMIT_PER_S": "0", "REELFORGE_MAX_CONCURRENT_JOBS": "0",
                 "REELFORGE_ADMISSION_MAX_QUEUE_DEPTH": "0", "REELFORGE_ADMISSION_MAX_QUEUE_AGE_S": "0"}
    stack = start_stack(StackConfig(data_dir=work / "create", gateway_port=free_port(), workers=(), env=unlimited))
    port = free_port()
    bare = ManagedProcess.spawn(
        "bare", [sys.executable, "-m", "uvicorn", "loadtests.bare_app:app", "--port", str(port),
                 "--log-level", "warning", "--no-access-log"],
        work / "create" / "logs", {**os.environ, "REDIS_URL": stack.info["redis_url"]},
        cwd=Path(__file__).resolve().parent.parent)
    try:
        bare.wait_ready(lambda: answers(f"http://127.0.0.1:{port}/docs"), "bare app answering", 30)
        targets = {
            "ours": (f"{stack.info['gateway_url']}/v1/videos", {"Authorization": f"Bearer {stack.info['api_key']}"},
                     stack.components["gateway"].pid),
            "bare": (f"http://127.0.0.1:{port}/v1/videos", {}, bare.pid),
        }
        results = {name: latency(url, headers, args) for name, (url, headers, _) in targets.items()}
        for name, (rps, cpu_us) in throughput_rounds(targets, args, work).items():
            results[name]["throughput_rps"] = rps
            results[name]["cpu_us_per_request"] = cpu_us
    finally:
        bare.stop()
        stack.stop()
    return results["ours"], results["bare"]


def bench_pipeline(args: argparse.Namespace, work: Path) -> dict[str, float]:
    stack = start_stack(StackConfig(data_dir=work / "pipeline", gateway_port=free_port()))
    try:
        store = JobStore(Redis.from_url(stack.info["redis_url"]))
        headers = {"Authorization": f"Bearer {stack.info['api_key']}"}
        queue_ms: list[float] = []
        overhead_ms: list[float] = []
        e2e_ms: list[float] = []
        with httpx.Client(base_url=stack.info["gateway_url"], headers=headers, timeout=30) as client:
            for _ in range(args.jobs + 2):
                video_id = client.post("/v1/videos", json={**BODY, "size": "64x64"}).json()["id"]
                while True:  # sequential jobs: the queue is empty when each is created
                    job = store.get(video_id)
                    assert job is not None
                    if job.is_terminal:
                        break
                    time.sleep(0.01)
                assert job.status == "completed", job.error
                at = job.transitions
                engine = sum(job.timings.get(p, 0.0) for p in ("encoding_prompt", "denoising", "decoding"))
                total = at["completed"] - at["queued"]
                queue_ms.append(at["in_progress"] - at["queued"])
                e2e_ms.append(total)
                overhead_ms.append(total - 1000 * (engine + job.timings.get("encoding", 0.0)))
        # the first two warm caches in the workers (first ffmpeg run, first S3 connection)
        queue_ms, overhead_ms, e2e_ms = queue_ms[2:], overhead_ms[2:], e2e_ms[2:]
    finally:
        stack.stop()
    return {"queue_p50_ms": pct(queue_ms, 50), "queue_p99_ms": pct(queue_ms, 99),
            "overhead_p50_ms": statistics.median(overhead_ms), "e2e_p50_ms": statistics.median(e2e_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop create rate, req/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients for throughput")
    parser.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds per server")
    parser.add_argument("--jobs", type=int, default=30, help="sequential jobs for queue/platform overhead")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("the throughput part needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-") as tmp:
        work = Path(tmp)
        ours, bare = bench_create(args, work)
        pipeline = bench_pipeline(args, work)
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu}; python {platform.python_version()}; "
          f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    rows: list[tuple[str, Any, str]] = [
        (f"create p50 at {args.rate:.0f} req/s (ours)", f"{ours['p50_ms']:.1f} ms", ""),
        (f"create p99 at {args.rate:.0f} req/s (ours)", f"{ours['p99_ms']:.1f} ms", "target ≤ 20 ms"),
        (f"create p50 / p99 at {args.rate:.0f} req/s (bare)", f"{bare['p50_ms']:.1f} / {bare['p99_ms']:.1f} ms", ""),
        ("create errors (ours / bare)", f"{ours['errors']:.0f} / {bare['errors']:.0f}", f"of {ours['sent']:.0f}"),
        (f"throughput, wrk {args.concurrency} connections (ours)", f"{ours['throughput_rps']:.0f} req/s",
         f"median of {args.rounds} alternating rounds"),
        (f"throughput, wrk {args.concurrency} connections (bare)", f"{bare['throughput_rps']:.0f} req/s",
         f"median of {args.rounds} alternating rounds"),
        ("ours / bare throughput", f"{ours['throughput_rps'] / bare['throughput_rps']:.2f}", "target ≥ 0.6"),
        ("server CPU per create, ours / bare",
         f"{ours['cpu_us_per_request']:.0f} / {bare['cpu_us_per_request']:.0f} µs", "during the wrk rounds"),
        ("queue overhead p50 (create → GPU stage starts)", f"{pipeline['queue_p50_ms']:.1f} ms", ""),
        ("queue overhead p99", f"{pipeline['queue_p99_ms']:.1f} ms", ""),
        ("end to end p50 (1 step, 64x64x16)", f"{pipeline['e2e_p50_ms']:.0f} ms", ""),
        ("platform overhead p50 (e2e − engine − encode)", f"{pipeline['overhead_p50_ms']:.1f} ms",
         "target ≤ 150 ms"),
    ]
    print("| measure | value | note |\n| --- | --- | --- |")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
