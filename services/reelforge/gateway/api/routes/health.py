"""Liveness and readiness; neither needs an API key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from reelforge.gateway.deps import RuntimeDep
from reelforge.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


def _check(rt: Runtime) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        rt.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means not ready; the message tells on-call which
        checks["redis"] = f"error: {type(exc).__name__}: {exc}"
    try:
        rt.storage.ping()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"error: {type(exc).__name__}: {exc}"
    return checks


@router.get("/readyz")
async def readyz(rt: RuntimeDep) -> JSONResponse:
    checks = await run_in_threadpool(_check, rt)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)
