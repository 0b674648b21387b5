"""Dependencies typed once, used by every route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from reelforge.core.tenants import Principal
from reelforge.gateway.errors import APIError
from reelforge.runtime import Runtime


def get_rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_rt)]


def authenticate(request: Request, rt: RuntimeDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    principal = rt.tenants.authenticate(token.strip())
    if principal is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
