"""The local stack behind `reelforge up` and the integration tests: real Redis (AOF), real SeaweedFS,
the gateway, the outbox relay, the three Celery workers and the queue exporter, each a child process
logging under DATA_DIR/logs. Every Prometheus endpoint is listed in stack.json under "metrics".

Everything lives under one data dir and all ports are configurable, so stacks run side by side.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from reelforge.core.storage import ObjectStore
from reelforge.core.tenants import SCOPES, TenantRegistry
from reelforge.devstack.client import STACK_INFO
from reelforge.devstack.processes import (
    ManagedProcess,
    free_port,
    start_redis,
    start_seaweedfs,
    start_triton,
    stop_together,
)
from reelforge.provenance.credentials import DEV_CHAIN_NAME, DEV_KEY_NAME, DEV_ROOT_NAME, write_dev_chain

DEV_TENANT = "dev"
DEV_S3_ACCESS_KEY = "reelforge-dev"
DEV_S3_SECRET_KEY = "reelforge-dev-secret"
WORKER_ROLES = ("relay", "gpu", "postprocess", "webhooks", "exporter")
CELERY_ROLES = ("gpu", "postprocess", "webhooks")
READY_TIMEOUT_S = 120.0
# Front to back: stop taking requests, let workers finish, then the servers and stores they call. The
# members of a stage stop together, so a stop waits out at most one grace period per stage (`reelforge
# up` on a loaded 2-core machine took over 60 s to stop one component at a time).
STOP_STAGES = (("gateway",), WORKER_ROLES, ("triton", "seaweedfs", "redis"))


class StackError(Exception):
    pass


@dataclass
class StackConfig:
    data_dir: Path
    gateway_port: int = 8000
    redis_port: int = 0
    s3_port: int = 0
    env: dict[str, str] = field(default_factory=dict)  # extra REELFORGE_* settings for every process
    workers: tuple[str, ...] = WORKER_ROLES  # benchmarks of the gateway alone start none
    engine_backend: str = "inprocess"  # "triton" also starts tritonserver and points the GPU worker at it
    gpu_concurrency: int = 1  # GPU worker processes; with Triton each is only a client
    ready_timeout_s: float = READY_TIMEOUT_S  # the fault tests wait longer on a machine shared with other work


@dataclass
class Stack:
    config: StackConfig
    info: dict[str, Any]
    env: dict[str, str]
    components: dict[str, ManagedProcess]

    def dead_components(self) -> list[str]:
        return [name for name, proc in self.components.items() if not proc.alive]

    def stop(self) -> None:
        for stage in STOP_STAGES:
            stop_together([self.components[name] for name in stage if name in self.components])
        (self.config.data_dir / STACK_INFO).unlink(missing_ok=True)

    def restart(self, name: str) -> None:
        """Stop one component and start it again with the same ports and data (fault tests)."""
        self.components[name].stop()
        self.components[name] = self._starters[name]()
        self.info["pids"][name] = self.components[name].pid
        _write_info(self.config.data_dir, self.info)

    _starters: dict[str, Callable[[], ManagedProcess]] = field(default_factory=dict)


def _write_info(data_dir: Path, info: dict[str, Any]) -> None:
    path = data_dir / STACK_INFO
    path.write_text(json.dumps(info, indent=2))
    path.chmod(0o600)


def _port(requested: int) -> int:
    return requested or free_port()


def _require_free(port: int, flag: str) -> None:
    """A taken port would let another process answer our readiness checks; refuse up front."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(f"port {port} is already in use; choose another with {flag}") from None


def _dev_credentials(data_dir: Path, registry: TenantRegistry) -> tuple[str, str]:
    """Reuse the dev key kept in the data dir while Redis still knows it; otherwise make a new one."""
    path = data_dir / "dev-api-key"
    if path.exists():
        api_key = path.read_text().strip()
        principal = registry.authenticate(api_key)
        if principal is not None:
            return principal.tenant, api_key
    _, api_key = registry.create_key(DEV_TENANT, name="dev", scopes=SCOPES)  # admin too: the audit log
    path.write_text(api_key + "\n")
    path.chmod(0o600)
    return DEV_TENANT, api_key


def _wait_ready(stack_procs: dict[str, ManagedProcess], ready_files: dict[str, Path], gateway_url: str,
                echo: Callable[[str], None], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(ready_files) | {"gateway"}
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            if not stack_procs[name].alive:
                raise StackError(f"{name} exited while starting:\n{stack_procs[name].log_tail()}")
            if name == "gateway":
                try:
                    ok = httpx.get(f"{gateway_url}/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    ok = False
            else:
                ok = ready_files[name].exists()
            if ok:
                pending.discard(name)
                echo(f"  {name} ready")
        time.sleep(0.2)
    if pending:
        raise StackError(f"not ready after {timeout_s:.0f} s: {', '.join(sorted(pending))}")


def start_stack(config: StackConfig, echo: Callable[[str], None] = lambda _: None) -> Stack:
    data_dir = config.data_dir
    for sub in ("logs", "run", "redis", "seaweedfs"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    components: dict[str, ManagedProcess] = {}
    starters: dict[str, Callable[[], ManagedProcess]] = {}
    for port, flag in ((config.gateway_port, "--port"), (config.redis_port, "--redis-port"),
                       (config.s3_port, "--s3-port")):
        if port:
            _require_free(port, flag)
    try:
        redis_port = _port(config.redis_port)
        starters["redis"] = lambda: start_redis(redis_port, data_dir / "redis")
        echo(f"starting redis on {redis_port}")
        components["redis"] = starters["redis"]()

        s3_port = _port(config.s3_port)
        seaweed_ports = (free_port(), free_port(), free_port())
        starters["seaweedfs"] = lambda: start_seaweedfs(
            data_dir / "seaweedfs", s3_port, *seaweed_ports, DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY)
        echo(f"starting seaweedfs (S3 on {s3_port})")
        components["seaweedfs"] = starters["seaweedfs"]()

        gateway_url = f"http://127.0.0.1:{config.gateway_port}"
        env = {
            **os.environ,
            "REELFORGE_ENVIRONMENT": "development",
            "REELFORGE_WEBHOOK_ALLOW_PRIVATE": "true",  # a receiver on this machine (docs/webhooks.md)
            "REELFORGE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "REELFORGE_BROKER_URL": f"redis://127.0.0.1:{redis_port}/1",
            "REELFORGE_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
            "REELFORGE_S3_ACCESS_KEY_ID": DEV_S3_ACCESS_KEY,
            "REELFORGE_S3_SECRET_ACCESS_KEY": DEV_S3_SECRET_KEY,
            **_dev_content_credentials(data_dir),
            **config.env,
        }
        triton_info: dict[str, str] = {}
        if config.engine_backend == "triton":
            triton_ports = (free_port(), free_port(), free_port())
            env["REELFORGE_ENGINE_BACKEND"] = "triton"
            env["REELFORGE_TRITON_URL"] = f"127.0.0.1:{triton_ports[0]}"
            triton_info = {"triton_grpc_url": env["REELFORGE_TRITON_URL"],
                           "triton_metrics_url": f"http://127.0.0.1:{triton_ports[2]}/metrics"}
            starters["triton"] = lambda: start_triton(data_dir / "triton", *triton_ports, env)
            echo(f"starting triton (gRPC on {triton_ports[0]}, metrics on {triton_ports[2]})")
            components["triton"] = starters["triton"]()
        storage = ObjectStore(endpoint_url=env["REELFORGE_S3_ENDPOINT_URL"], public_endpoint_url=None,
                              bucket=env.get("REELFORGE_S3_BUCKET", "reelforge"), region="us-east-1",
                              access_key_id=DEV_S3_ACCESS_KEY, secret_access_key=DEV_S3_SECRET_KEY)
        storage.ensure_bucket()
        registry = TenantRegistry(Redis.from_url(env["REELFORGE_REDIS_URL"]))
        tenant, api_key = _dev_credentials(data_dir, registry)

        ready_files = {role: data_dir / "run" / f"{role}.ready" for role in config.workers}
        for ready in ready_files.values():
            ready.unlink(missing_ok=True)
        exe = [sys.executable, "-m", "reelforge.cli"]
        starters["gateway"] = lambda: ManagedProcess.spawn(
            "gateway", [*exe, "gateway", "--port", str(config.gateway_port)], data_dir / "logs", env)
        metrics_targets = {"gateway": f"127.0.0.1:{config.gateway_port}"}
        if triton_info:  # Triton's own endpoint, scraped next to ours
            metrics_targets["triton"] = triton_info["triton_metrics_url"].removeprefix("http://").removesuffix("/metrics")
        for role in config.workers:
            role_env = {**env, "REELFORGE_READY_FILE": str(ready_files[role])}
            if role in CELERY_ROLES or role == "exporter":
                port = free_port()
                role_env["REELFORGE_EXPORTER_PORT" if role == "exporter" else "REELFORGE_METRICS_PORT"] = str(port)
                metrics_targets[role] = f"127.0.0.1:{port}"
            argv = [*exe, "worker", role] if role in CELERY_ROLES else [*exe, role]
            if role == "gpu":
                argv += ["--concurrency", str(config.gpu_concurrency)]
            starters[role] = functools.partial(ManagedProcess.spawn, role, argv, data_dir / "logs", role_env)
        for name in ("gateway", *config.workers):
            echo(f"starting {name}")
            components[name] = starters[name]()
        _wait_ready(components, ready_files, gateway_url, echo, config.ready_timeout_s)
    except BaseException:
        for proc in reversed(list(components.values())):
            proc.stop()
        raise

    info = {
        "gateway_url": gateway_url,
        "api_key": api_key,
        "tenant": tenant,
        "webhook_secret": registry.webhook_secret(tenant),
        "redis_url": env["REELFORGE_REDIS_URL"],
        "broker_url": env["REELFORGE_BROKER_URL"],
        "s3_endpoint_url": env["REELFORGE_S3_ENDPOINT_URL"],
        "s3_bucket": env.get("REELFORGE_S3_BUCKET", "reelforge"),
        "s3_access_key_id": DEV_S3_ACCESS_KEY,
        "s3_secret_access_key": DEV_S3_SECRET_KEY,
        "logs": str(data_dir / "logs"),
        "metrics": metrics_targets,
        "engine_backend": config.engine_backend,
        "c2pa_trust_anchors": env["REELFORGE_C2PA_TRUST_ANCHORS"],
        **triton_info,
        "pids": {name: proc.pid for name, proc in components.items()},
    }
    _write_info(data_dir, info)
    return Stack(config=config, info=info, env=env, components=components, _starters=starters)


def _dev_content_credentials(data_dir: Path) -> dict[str, str]:
    """A development C2PA signing chain, made once per data dir: every MP4 of the stack is signed."""
    folder = data_dir / "provenance"
    paths = [folder / name for name in (DEV_CHAIN_NAME, DEV_KEY_NAME, DEV_ROOT_NAME)]
    if not all(path.exists() for path in paths):
        paths = list(write_dev_chain(folder))
    names = ("REELFORGE_C2PA_CERT_CHAIN", "REELFORGE_C2PA_PRIVATE_KEY", "REELFORGE_C2PA_TRUST_ANCHORS")
    return {name: str(path.resolve()) for name, path in zip(names, paths)}


def stop_detached(data_dir: Path, timeout_s: float = 20.0) -> bool:
    path = data_dir / STACK_INFO
    if not path.exists():
        return False
    pids: dict[str, int] = json.loads(path.read_text()).get("pids", {})
    for stage in STOP_STAGES:
        _terminate_groups([pids[name] for name in stage if name in pids], timeout_s)
    path.unlink(missing_ok=True)
    return True


def _terminate_groups(pids: list[int], timeout_s: float) -> None:
    """SIGTERM each process group at once, poll until all are gone or timeout_s, SIGKILL the rest."""
    running = []
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
            running.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while running and time.monotonic() < deadline:
        running = [pid for pid in running if _group_exists(pid)]
        if running:
            time.sleep(0.2)
    for pid in running:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _group_exists(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True
