"""Dependencies typed once, used by every route."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from reelforge.core.tenants import Principal, hash_key
from reelforge.gateway.errors import APIError
from reelforge.runtime import Runtime

# The create path caches successful key look-ups briefly per process: one Redis round trip less per
# create. A revoked key is still refused at once there: the create script re-checks the key record in
# the same step as it writes the job. Every other route looks the key up each time.
AUTH_CACHE_TTL_S = 5.0
AUTH_CACHE_MAX = 10_000
_auth_cache: dict[str, tuple[float, Principal]] = {}


async def get_rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_rt)]


async def _lookup(rt: Runtime, token: str, cached: bool) -> Principal | None:
    if not cached:
        return await run_in_threadpool(rt.tenants.authenticate, token)
    digest = hash_key(token)
    hit = _auth_cache.get(digest)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    principal = await run_in_threadpool(rt.tenants.authenticate, token)
    if principal is not None:
        if len(_auth_cache) >= AUTH_CACHE_MAX:
            _auth_cache.clear()
        _auth_cache[digest] = (now + AUTH_CACHE_TTL_S, principal)
    return principal


def invalid_key() -> APIError:
    return APIError(401, "Incorrect API key provided, or the key was revoked.", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request, scope: str, *, cached: bool = False) -> Principal:
    header = request.headers.get("authorization", "")
    auth_scheme, _, token = header.partition(" ")
    if auth_scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    principal = await _lookup(request.app.state.runtime, token.strip(), cached)
    if principal is None:
        raise invalid_key()
    if scope not in principal.scopes:
        raise APIError(403, f"This API key lacks the '{scope}' scope that {request.method} {request.url.path} "
                            f"needs; use a key created with `reelforge keys create --scope {scope}`.",
                       code="missing_scope", type="permission_error")
    return principal


def _scoped(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        return await authenticate(request, scope)
    return dependency


ReadPrincipal = Annotated[Principal, Depends(_scoped("read"))]
CreatePrincipal = Annotated[Principal, Depends(_scoped("create"))]
AdminPrincipal = Annotated[Principal, Depends(_scoped("admin"))]
# Routes written before scopes existed read with it; new routes name the scope they need.
PrincipalDep = ReadPrincipal
