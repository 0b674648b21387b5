"""Faults on real processes: records survive a Redis restart (AOF), a GPU worker killed mid-job is
replaced and the job is redelivered and finishes, counted as a second attempt."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from reelforge.devstack.stack import Stack
from tests.integration.conftest import (
    GPU_IN_FLIGHT,
    new_tenant_key,
    running_stack,
    scraped,
    wait_terminal,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: these tests restart and kill its components."""
    yield from running_stack(tmp_path_factory, "fault-stack")


@pytest.fixture()
def client(fault_stack: Stack) -> Iterator[httpx.Client]:
    key = new_tenant_key(fault_stack, f"fault{os.getpid()}{time.monotonic_ns() % 10**6}")
    with httpx.Client(base_url=fault_stack.info["gateway_url"], headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as http:
        yield http


def until_answered(call: Callable[[], httpx.Response], timeout: float = 60) -> httpx.Response:
    """Retry like a client would while Redis restarts: the gateway answers 503 with Retry-After then."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = call()
            if response.status_code == 200:
                return response
            assert response.status_code == 503, response.text
            last = response.text
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"no answer within {timeout} s after the restart; last: {last}")


def test_jobs_survive_a_redis_restart(fault_stack: Stack, client: httpx.Client) -> None:
    video = client.post("/v1/videos", json={"prompt": "durable", "num_steps": 1}).json()
    done = wait_terminal(client, video["id"])
    assert done["status"] == "completed"
    fault_stack.restart("redis")
    again = until_answered(lambda: client.get(f"/v1/videos/{video['id']}"))
    assert again.json() == done
    # the gateway's pooled connections and the workers reconnect to the restarted Redis
    created = until_answered(lambda: client.post("/v1/videos", json={"prompt": "after restart", "num_steps": 1}))
    after = created.json()
    assert wait_terminal(client, after["id"], timeout=90)["status"] == "completed"


def _gpu_children(fault_stack: Stack) -> list[int]:
    parent = fault_stack.components["gpu"].pid
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) != parent:
                continue
            cmd = (entry / "cmdline").read_bytes()
            if b"reelforge" in cmd or b"celery" in cmd or b"python" in cmd:
                children.append(int(entry.name))
    return children


def test_killed_gpu_worker_process_is_redelivered_as_a_second_attempt(
    fault_stack: Stack, client: httpx.Client
) -> None:
    video = client.post("/v1/videos", json={"prompt": "survive a crash", "size": "128x128", "seconds": "4",
                                            "num_steps": 12}).json()
    wait_until(client, video["id"], lambda v: v["phase"] == "denoising" and v["step"] >= 1, timeout=90)
    children = _gpu_children(fault_stack)
    assert children, "the prefork GPU worker has a child process"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    done = wait_terminal(client, video["id"], timeout=180)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    # the killed child never ran its exit hook: its live gauges must not count any more
    assert scraped(fault_stack, "gpu", GPU_IN_FLIGHT) == 0
    assert scraped(fault_stack, "gpu", 'reelforge_engine_loaded{model="reelforge-mini"}') == 1
