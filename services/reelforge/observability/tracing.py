"""One trace per job (OpenTelemetry): spans in every process, W3C trace context through Celery headers.

Every publish goes through `before_task_publish`, which writes the current context into the message's
headers as `traceparent`; a task continues it with `task_span`. The trace context is propagated by hand
rather than with opentelemetry-instrumentation-celery: reelforge publishes by task name from processes
that do not register the task (the gateway, the relay, the GPU worker publishing post-process work), and
for such a publish that instrumentation starts a producer span that it never ends or detaches.

A job keeps the traceparent of the request that created it, so work started outside the job's own
context (the relay's publish, a cancel's webhook) still joins the job's trace.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind

from reelforge import __version__

if TYPE_CHECKING:  # the core publishes spans through this module and stays free of settings
    from reelforge.settings import Settings

TRACEPARENT = "traceparent"
tracer = trace.get_tracer("reelforge", __version__)


def _exporter(settings: Settings) -> SpanExporter | None:
    if settings.otel_exporter == "console":
        return ConsoleSpanExporter()
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.otel_endpoint)
    return None


def configure_tracing(service: str, settings: Settings) -> None:
    """Install the process's tracer provider. Spans are made even with no exporter: the trace id is
    stored on each job and returned by the API. The batch processor restarts its thread after a fork."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"reelforge-{service}",
                                                        "service.version": __version__}))
    exporter = _exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT)


def trace_id_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return trace.format_trace_id(ctx.trace_id) if ctx.is_valid else None


def inject_trace_context(carrier: MutableMapping[str, Any]) -> None:
    inject(carrier)


@contextmanager
def job_context(traceparent: str | None) -> Iterator[None]:
    """Run inside the job's trace: the current one if it already is, else the job's stored context."""
    if traceparent is None or current_trace_id() == trace_id_of(traceparent):
        yield
        return
    token = context.attach(extract({TRACEPARENT: traceparent}))
    try:
        yield
    finally:
        context.detach(token)


@contextmanager
def publish_span(queue: str, traceparent: str | None = None) -> Iterator[Span]:
    with job_context(traceparent), tracer.start_as_current_span(
        f"publish {queue}", kind=SpanKind.PRODUCER, attributes={"messaging.destination.name": queue}
    ) as span:
        yield span


@contextmanager
def consume_span(name: str, traceparent: str | None, job_id: str) -> Iterator[Span]:
    """A task's span, continuing the trace its message carries (the `traceparent` header)."""
    parent = extract({TRACEPARENT: traceparent}) if traceparent else None
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER,
                                      attributes={"reelforge.job_id": job_id}) as span:
        yield span
