"""Real local components (redis-server, SeaweedFS) as child processes, for `reelforge up` and the tests.

Each process runs in its own session, so stopping it also stops anything it spawned, and keeps all of
its state and its log under the data dir it is given, so several stacks run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from redis import Redis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0
_POLL_INTERVAL_S = 0.1
# On SIGTERM SeaweedFS's volume server closes its files at once, but the filer then waits on its own
# metadata subscriptions: 15 s at best, forever at worst (seen here), so kill after a short grace.
SEAWEEDFS_STOP_TIMEOUT_S = 5.0
# One volume per bucket instead of seven keeps a dev stack's disk and start-up small.
_SEAWEEDFS_MASTER_TOML = "[master.volume_growth]\ncopy_1 = 1\n"


class DevstackError(RuntimeError):
    """A local component could not be started."""


# Ports free_port has handed out in this process. The kernel can give the same port to two binds in a row
# once the first socket is closed, and a component gets its ports from several calls before it binds any
# (SeaweedFS: eight), so a repeat would make two listeners of one stack collide.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port free on loopback right now and never returned before by this process (the OS picks it,
    so other processes rarely collide with it)."""
    with _handed_out_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise DevstackError("the OS kept offering loopback ports this process already handed out")


class ManagedProcess:
    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], log_path: Path, stop_timeout_s: float
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_timeout_s = stop_timeout_s
        self._popen = popen
        self._stopped = False

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> ManagedProcess:
        """Start argv with stdout and stderr appended to log_dir/<name>.log."""
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        return cls(name, popen, log_path, stop_timeout_s)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the process group, wait up to timeout (default: this process's own), then SIGKILL."""
        stop_together([self], timeout)

    def _terminate(self) -> bool:
        """SIGTERM the group once; False when there is nothing left to stop."""
        if self._stopped or not self.alive:
            self._stopped = True
            return False
        self._stopped = True
        self._signal_group(signal.SIGTERM)
        return True

    def _reap(self, deadline: float) -> None:
        """After _terminate: wait for the leader until deadline (monotonic), then SIGKILL the group."""
        try:
            self._popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self._popen.wait()
        # Children that outlived the leader would hold ports and files the next start needs. Only
        # swept right after reaping it, while the group id cannot yet belong to anyone else.
        self._signal_group(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll check until it holds; on death or timeout stop the process and raise with its log tail."""
        deadline = time.monotonic() + timeout_s
        while not check():
            if not self.alive:
                self.stop()
                status = self._popen.returncode
                raise DevstackError(f"{self.name} exited ({status}) before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DevstackError(f"{self.name}: no {what} after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(_POLL_INTERVAL_S)

    def _signal_group(self, signum: signal.Signals) -> None:
        try:
            os.killpg(self._popen.pid, signum)
        except ProcessLookupError:
            pass


def stop_together(processes: Sequence[ManagedProcess], timeout: float | None = None) -> None:
    """Stop processes that may stop in any order among themselves: SIGTERM every group at once, then
    reap each by its own deadline (timeout, default its stop_timeout_s, from the signal) and SIGKILL
    what outlives it. Several slow stoppers cost the longest grace, not the sum of them."""
    signalled_at = time.monotonic()
    stopping = [process for process in processes if process._terminate()]
    for process in stopping:
        process._reap(signalled_at + (process.stop_timeout_s if timeout is None else timeout))


def start_redis(
    port: int, data_dir: Path, *, redis_server: str | None = None, timeout_s: float = READY_TIMEOUT_S
) -> ManagedProcess:
    """redis-server with AOF on, no RDB snapshots, all files in data_dir; returns once PING answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server or _find_executable("redis-server", ["/usr/bin/redis-server"]),
        "--port", str(port), "--bind", "127.0.0.1",
        "--appendonly", "yes", "--dir", str(data_dir), "--save", "",
    ]  # fmt: skip
    process = ManagedProcess.spawn("redis", argv, data_dir)
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        process.wait_ready(lambda: _redis_answers(client), "PING answer", timeout_s)
    finally:
        client.close()
    return process


def start_seaweedfs(
    data_dir: Path,
    s3_port: int,
    master_port: int,
    volume_port: int,
    filer_port: int,
    access_key: str,
    secret_key: str,
    *,
    weed: str | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> ManagedProcess:
    """Single-node SeaweedFS (master, volume, filer, S3) on loopback; returns once S3 takes signed calls
    and a volume server has joined, so the first write does not stall waiting for one."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "master.toml").write_text(_SEAWEEDFS_MASTER_TOML)
    s3_config = data_dir / "s3-identities.json"
    _write_private(s3_config, json.dumps(_s3_identities(access_key, secret_key)))
    grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    argv = [
        weed or _find_executable("weed", [str(Path(sys.executable).parent / "weed")]),
        # Logs to our log file instead of glog files in /tmp; master.toml is read from the data dir.
        "-logtostderr", f"-config_dir={data_dir}",
        "server", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master_port}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={volume_port}", f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={filer_port}", f"-filer.port.grpc={grpc['filer']}",
        "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={s3_config}",
        # These two listen on fixed default ports, which would collide between side-by-side stacks.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        # A lone master elects itself at once instead of after a raft round (about 5 s less start-up).
        "-master.peers=none",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=32",
        "-volume.preStopSeconds=0",
    ]  # fmt: skip
    # weed also turns AWS_* variables into an identity; only the identities file may grant access.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = ManagedProcess.spawn("seaweedfs", argv, data_dir, env, stop_timeout_s=SEAWEEDFS_STOP_TIMEOUT_S)
    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{s3_port}",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2
        ),
    )

    def ready() -> bool:
        return _s3_answers(s3) and _volume_server_joined(master_port)

    process.wait_ready(ready, "signed S3 answer and joined volume server", timeout_s)
    return process


def _s3_identities(access_key: str, secret_key: str) -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "reelforge",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _find_executable(name: str, preferred: Sequence[str]) -> str:
    for candidate in preferred:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        raise DevstackError(f"{name} not found (looked at {', '.join(preferred)} and PATH)")
    return found


def _redis_answers(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except RedisError:  # refused or loading: not yet; wait_ready reports the log if it never answers
        return False


def _s3_answers(s3: S3Client) -> bool:
    try:
        s3.list_buckets()
    except (BotoCoreError, ClientError):  # refused, or 503 while the filer starts: not yet
        return False
    return True


def _volume_server_joined(master_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{master_port}/dir/status", timeout=1) as response:
            status = json.load(response)
    except (OSError, ValueError):
        return False
    return bool(status.get("Topology", {}).get("Max", 0) > 0)


TRITON_READY_TIMEOUT_S = 300.0  # every model process imports torch and loads the engine


def start_triton(
    work_dir: Path, grpc_port: int, http_port: int, metrics_port: int, env: Mapping[str, str],
    *, timeout_s: float = TRITON_READY_TIMEOUT_S,
) -> ManagedProcess:
    """tritonserver with the engine's model repository, on loopback; returns once every model is loaded
    (strict readiness). env: the REELFORGE_ENGINE_* settings its models load the engine with."""
    from reelforge.engine.triton.server import TritonPorts, server_command

    argv, server_env = server_command(work_dir, TritonPorts(grpc=grpc_port, http=http_port, metrics=metrics_port),
                                      env)
    process = ManagedProcess.spawn("triton", argv, work_dir, server_env)
    process.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{http_port}/v2/health/ready"), "ready models", timeout_s)
    return process


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
