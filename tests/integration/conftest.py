"""A real stack for the integration tests: redis-server, SeaweedFS, the gateway and three Celery worker
processes, started by the same code as `reelforge up`, plus a webhook receiver and an OTLP/HTTP trace
receiver on loopback (every process of the shared stack exports its spans to it with the real OTLP exporter)."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from redis import Redis

from reelforge.core.storage import ObjectStore
from reelforge.core.tenants import TenantRegistry
from reelforge.devstack.processes import free_port, start_redis
from reelforge.devstack.stack import Stack, StackConfig, start_stack

TERMINAL = {"completed", "failed", "cancelled"}
# Five attempts, the Standard Webhooks schedule shrunk to seconds (the relay adds up to 1 s to each wait).
WEBHOOK_TEST_SCHEDULE = "[0, 0.3, 0.5, 1, 1]"
GPU_IN_FLIGHT = 'reelforge_jobs_in_flight{stage="gpu"}'


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


def serve_on_loopback(handler: type[BaseHTTPRequestHandler], port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """A threaded HTTP server on loopback (a free port unless one is given), serving in the background;
    -> (server, base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class WebhookReceiver:
    """Records every delivery with the status it answered: the next of `script` (a status, or a status
    and headers), else `status` (204)."""

    def __init__(self, port: int = 0) -> None:
        self.deliveries: list[dict[str, Any]] = []
        self.script: list[int | tuple[int, dict[str, str]]] = []
        self.status = 204
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    step = receiver.script.pop(0) if receiver.script else receiver.status
                    status, headers = step if isinstance(step, tuple) else (step, {})
                    receiver.deliveries.append({"path": self.path, "headers": dict(self.headers.items()),
                                                "body": body.decode(), "status": status, "at": time.monotonic()})
                self.send_response(status)
                for name, value in {**headers, "content-length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

        self.server, self.url = serve_on_loopback(Handler, port)

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [d for d in self.deliveries if json.loads(d["body"])["data"]["id"] == job_id]

    def wait_for(self, job_id: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.for_job(job_id)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"expected {count} webhook deliveries for {job_id}, got {self.for_job(job_id)}")


class OtlpReceiver:
    """Collects the spans OTLP/HTTP exporters POST to /v1/traces (protobuf), as flat dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    receiver.spans.extend(_flat_spans(request))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server, base_url = serve_on_loopback(Handler)
        self.url = f"{base_url}/v1/traces"

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [span for span in self.spans if span["trace_id"] == trace_id]


def _flat_spans(request: ExportTraceServiceRequest) -> Iterator[dict[str, Any]]:
    for resource_spans in request.resource_spans:
        service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {"service": service, "name": span.name, "trace_id": span.trace_id.hex(),
                       "span_id": span.span_id.hex(), "parent_id": span.parent_span_id.hex(), "kind": span.kind}


def running_stack(factory: pytest.TempPathFactory, name: str, stack_config: dict[str, Any] | None = None,
                  **extra_env: str) -> Iterator[Stack]:
    """A whole stack on free ports under a fresh data dir, with webhook retries fast enough for tests
    (WEBHOOK_TEST_SCHEDULE).
    stack_config: extra StackConfig fields (the Triton backend, say)."""
    env = {"REELFORGE_WEBHOOK_RETRY_SCHEDULE_S": WEBHOOK_TEST_SCHEDULE, **extra_env}
    running = start_stack(StackConfig(data_dir=factory.mktemp(name), gateway_port=free_port(), env=env,
                                      **(stack_config or {})))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A redis-server of the test module's own, without the rest of the stack."""
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield Redis(port=port)
    proc.stop()


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    traces = OtlpReceiver()
    yield traces
    traces.server.shutdown()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[Stack]:
    # Spans leave every process within 0.2 s instead of the batch processor's default 5 s; every clip is
    # offered for quality scoring.
    yield from running_stack(tmp_path_factory, "stack", REELFORGE_OTEL_EXPORTER="otlp",
                             REELFORGE_OTEL_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY="200",
                             REELFORGE_QUALITY_SAMPLE_RATE="1")


@pytest.fixture(scope="session")
def gateway_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis, SeaweedFS and the gateway, no workers: for the bad-input tests, whose accepted jobs only queue."""
    yield from running_stack(tmp_path_factory, "gateway-only", {"workers": ()}, REELFORGE_BODY_READ_TIMEOUT_S="3")


@pytest.fixture(scope="session")
def receiver() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    yield hooks
    hooks.server.shutdown()


@pytest.fixture(scope="session")
def redis_client(stack: Stack) -> Redis:
    return Redis.from_url(stack.info["redis_url"])


@pytest.fixture(scope="session")
def broker(stack: Stack) -> Redis:
    return Redis.from_url(stack.info["broker_url"])


@pytest.fixture(scope="session")
def storage(stack: Stack) -> ObjectStore:
    info = stack.info
    return ObjectStore(endpoint_url=info["s3_endpoint_url"], public_endpoint_url=None, bucket=info["s3_bucket"],
                       region="us-east-1", access_key_id=info["s3_access_key_id"],
                       secret_access_key=info["s3_secret_access_key"])


def new_tenant_key(stack: Stack, tenant: str) -> str:
    _, api_key = TenantRegistry(Redis.from_url(stack.info["redis_url"])).create_key(tenant)
    return api_key


@pytest.fixture()
def api(stack: Stack, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A client for a fresh tenant of its own, so listings and counts never see other tests' jobs."""
    key = new_tenant_key(stack, "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16])
    with httpx.Client(base_url=stack.info["gateway_url"], headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        yield client


def wait_terminal(client: httpx.Client, video_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video: dict[str, Any] = client.get(f"/v1/videos/{video_id}").json()
        if video["status"] in TERMINAL:
            return video
        time.sleep(0.1)
    raise AssertionError(f"video {video_id} not finished after {timeout} s: {video}")


def scraped(stack: Stack, component: str, sample: str) -> float | None:
    """One sample, written as Prometheus prints it (`name{label="value"}`), from a component's own /metrics."""
    text = httpx.get(f"http://{stack.info['metrics'][component]}/metrics", timeout=5).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.rsplit(" ", 1)[0] == sample]
    return values[0] if values else None


def wait_until(client: httpx.Client, video_id: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video: dict[str, Any] = client.get(f"/v1/videos/{video_id}").json()
        if predicate(video):
            return video
        time.sleep(0.05)
    raise AssertionError(f"condition not reached for {video_id}: {video}")


def wait_delivery(client: httpx.Client, event_id: str, status: str, timeout: float = 60,
                  min_attempts: int = 1) -> dict[str, Any]:
    """The tenant's delivery-log entry of a webhook event once it has reached status (and made at
    least min_attempts attempts)."""
    deadline = time.monotonic() + timeout
    delivery: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/webhooks/deliveries/{event_id}")
        delivery = answer.json() if answer.status_code == 200 else {}
        if delivery.get("status") == status and len(delivery["attempts"]) >= min_attempts:
            return delivery
        time.sleep(0.05)
    raise AssertionError(f"webhook delivery {event_id} not {status} after {timeout} s: {delivery}")
