"""Per-request metrics and the request's server span, as one ASGI middleware (the outermost), plus /metrics.

The route label is the matched route's template (`/v1/videos/{video_id}`), so ids never become labels;
requests refused before routing (body too large) or matching no route are labelled "unmatched".
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelforge.observability import metrics
from reelforge.observability.tracing import tracer

UNMATCHED_ROUTE = "unmatched"


class RequestTelemetry:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        method = scope["method"]
        # Continue the caller's trace when it sends a traceparent.
        parent = extract({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                          if k == b"traceparent" or k == b"tracestate"})

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER) as span:
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", UNMATCHED_ROUTE)
                status_class = metrics.status_class(status)
                metrics.HTTP_REQUESTS.labels(template, method, status_class).inc()
                metrics.HTTP_DURATION.labels(template, method, status_class).observe(time.perf_counter() - started)
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body = await run_in_threadpool(generate_latest, metrics.registry())
    return Response(body, media_type=CONTENT_TYPE_LATEST)
