"""Dependencies typed once, used by every route."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from reelforge.core.tenants import Principal, hash_key
from reelforge.gateway.errors import APIError
from reelforge.runtime import Runtime

# Successful key look-ups are cached briefly per process: one Redis round trip less per request.
# A revoked key therefore keeps working for at most this long on each gateway process.
AUTH_CACHE_TTL_S = 5.0
AUTH_CACHE_MAX = 10_000
_auth_cache: dict[str, tuple[float, Principal]] = {}


async def get_rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_rt)]


async def _lookup(rt: Runtime, token: str) -> Principal | None:
    digest = hash_key(token)
    cached = _auth_cache.get(digest)
    now = time.monotonic()
    if cached is not None and cached[0] > now:
        return cached[1]
    principal = await run_in_threadpool(rt.tenants.authenticate, token)
    if principal is not None:
        if len(_auth_cache) >= AUTH_CACHE_MAX:
            _auth_cache.clear()
        _auth_cache[digest] = (now + AUTH_CACHE_TTL_S, principal)
    return principal


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    principal = await _lookup(request.app.state.runtime, token.strip())
    if principal is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
