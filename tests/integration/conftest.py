"""A real stack for the integration tests: redis-server, SeaweedFS, the gateway and three Celery worker
processes, started by the same code as `reelforge up`, plus a webhook receiver on loopback."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from redis import Redis

from reelforge.core.storage import ObjectStore
from reelforge.core.tenants import TenantRegistry
from reelforge.devstack.processes import free_port
from reelforge.devstack.stack import Stack, StackConfig, start_stack

TERMINAL = {"completed", "failed", "cancelled"}


class WebhookReceiver:
    """Records every delivery; answers with the status codes queued in `script` (default 204)."""

    def __init__(self) -> None:
        self.deliveries: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.deliveries.append(
                        {"path": self.path, "headers": dict(self.headers.items()), "body": body.decode()})
                    status = receiver.script.pop(0) if receiver.script else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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


def running_stack(factory: pytest.TempPathFactory, name: str, env: dict[str, str] | None = None,
                  **config: Any) -> Iterator[Stack]:
    """A whole stack on free ports under a fresh data dir, with webhook retries fast enough for tests.
    env and config: extra settings and StackConfig fields (the Triton backend, say)."""
    env = {"REELFORGE_WEBHOOK_BACKOFF_S": "[0.3, 0.3, 0.3]", "REELFORGE_WEBHOOK_MAX_ATTEMPTS": "3", **(env or {})}
    running = start_stack(StackConfig(data_dir=factory.mktemp(name), gateway_port=free_port(), env=env, **config))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, "stack")


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


def wait_until(client: httpx.Client, video_id: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video: dict[str, Any] = client.get(f"/v1/videos/{video_id}").json()
        if predicate(video):
            return video
        time.sleep(0.05)
    raise AssertionError(f"condition not reached for {video_id}: {video}")
