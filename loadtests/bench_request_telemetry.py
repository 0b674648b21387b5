"""CPU cost of the gateway's per-request telemetry, a script, not a test.

    .venv/bin/python loadtests/bench_request_telemetry.py [--requests 10000] [--rounds 5]

Drives one FastAPI route through its ASGI interface directly (no sockets, no HTTP parsing), alternating
rounds between: no telemetry; the gateway's (RequestTelemetry: Prometheus metrics and its own server
span, FastAPI's telemetry off); FastAPI's native server span alone; FastAPI's default telemetry
(per-operation spans too). Prints the median CPU microseconds per request of each. Tracing is configured
as in production with no exporter.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp

from reelforge.gateway.main import TELEMETRY
from reelforge.gateway.telemetry import RequestTelemetry
from reelforge.observability.tracing import configure_tracing
from reelforge.settings import Settings

SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
    "path": "/v1/videos/video_1", "raw_path": b"/v1/videos/video_1", "root_path": "", "query_string": b"",
    "headers": [(b"host", b"bench"), (b"authorization", b"Bearer x")], "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}


def app(telemetry: TelemetryConfig) -> FastAPI:
    api = FastAPI(telemetry=telemetry)

    @api.get("/v1/videos/{video_id}")
    async def retrieve(video_id: str) -> Response:
        return Response(b'{"id": "' + video_id.encode() + b'"}', media_type="application/json")

    return api


async def drive(target: ASGIApp, requests: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        pass

    started = time.process_time()
    for _ in range(requests):
        await target(dict(SCOPE), receive, send)
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_tracing("bench", Settings(environment="development"))
    variants: dict[str, ASGIApp] = {
        "no telemetry": app(TELEMETRY),
        "gateway: RequestTelemetry": RequestTelemetry(app(TELEMETRY)),
        "FastAPI's server span alone": app({"operation_spans": False, "metrics": False, "logs": False}),
        "FastAPI's default telemetry": app({}),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for target in variants.values():
        asyncio.run(drive(target, 1000))  # warm up
    for _ in range(args.rounds):
        for name, target in variants.items():
            results[name].append(asyncio.run(drive(target, args.requests)))
    print(f"CPU per request, median of {args.rounds} rounds of {args.requests}:")
    for name, values in results.items():
        print(f"  {name}: {statistics.median(values):.1f} µs")


if __name__ == "__main__":
    main()
