"""The OpenAI error envelope: {"error": {"message", "type", "param", "code"}} for every non-2xx answer."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from reelforge.core.store import out_of_memory

log = structlog.get_logger("reelforge.gateway")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """The OpenAI error envelope, as documented in the OpenAPI schema for every error status."""

    error: ErrorDetail


# Every status a /v1 route may answer besides 200; the OpenAPI schema lists them so clients (and
# schemathesis) know the shape of each.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "invalid request: the message names the parameter and what to change",
        401: "missing, unknown or revoked API key",
        403: "the API key lacks the scope this operation needs",
        404: "no such resource for this API key, or its content is not ready",
        409: "conflict: Idempotency-Key reused with another body, or the video cannot be cancelled",
        408: "the request body did not arrive in time",
        413: "request body too large",
        415: "unsupported Content-Type",
        429: "rate limit or quota reached; retry after Retry-After seconds",
        503: "overloaded or a dependency is down; retry after Retry-After seconds",
    }.items()
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(video_id: str) -> APIError:
    return APIError(404, f"No video found with id '{video_id}'.", param="video_id", code="not_found")


def envelope(status: int, message: str, type: str, param: str | None, code: str | None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


_STATUS_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return envelope(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return envelope(400, f"Invalid value for '{param}': {first['msg']}.", "invalid_request_error",
                        param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return envelope(exc.status_code, str(exc.detail), "invalid_request_error", None,
                        _STATUS_CODES.get(exc.status_code), dict(exc.headers or {}))

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("redis_unavailable", path=request.url.path, error=str(exc))
        return envelope(503, "The job store is unavailable; retry shortly.", "server_error", None,
                        "service_unavailable", {"Retry-After": "5"})

    @app.exception_handler(ResponseError)
    async def _store_refused(request: Request, exc: ResponseError) -> JSONResponse:
        if not out_of_memory(exc):
            return await _unexpected(request, exc)
        # maxmemory with noeviction: Redis refuses writes rather than evict jobs or queued messages.
        log.error("redis_full", path=request.url.path, error=str(exc))
        return envelope(503, "The job store is full and accepts no new jobs right now; retry later.",
                        "server_error", None, "service_unavailable", {"Retry-After": STORE_FULL_RETRY_AFTER_S})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return envelope(500, "The server had an error processing your request.", "server_error", None,
                        "internal_error")


# Freeing memory takes an operator (raise maxmemory, scale out, purge): longer than a restart's 5 s.
STORE_FULL_RETRY_AFTER_S = "30"
