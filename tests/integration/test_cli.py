"""The commands a new user runs first: `reelforge up --detach`, `generate`, `down`, as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from reelforge.devstack.processes import free_port

pytestmark = pytest.mark.integration


def reelforge(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelforge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_up_generate_down(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    port = free_port()
    up = reelforge("up", "--detach", "--data-dir", str(data_dir), "--port", str(port))
    assert up.returncode == 0, up.stderr
    try:
        assert f"gateway:        http://127.0.0.1:{port}" in up.stdout
        assert "api key:        rf_" in up.stdout and "webhook secret: whsec_" in up.stdout
        assert f"metrics:        gateway 127.0.0.1:{port}, " in up.stdout and " exporter 127.0.0.1:" in up.stdout
        second = reelforge("up", "--detach", "--data-dir", str(tmp_path / "other"), "--port", str(port))
        assert second.returncode != 0 and f"port {port} is already in use" in second.stderr

        out = tmp_path / "clip.mp4"
        gen = reelforge("generate", "a red circle moving left", "--data-dir", str(data_dir), "--steps", "2",
                        "--output", str(out))
        assert gen.returncode == 0, gen.stderr
        assert f"mp4 path: {out}" in gen.stdout and f"http://127.0.0.1:{port}/v1/videos/video_" in gen.stdout
        with av.open(str(out)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
        info = json.loads((data_dir / "stack.json").read_text())
        pids = list(info["pids"].values())
    finally:
        down = reelforge("down", "--data-dir", str(data_dir))
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not (data_dir / "stack.json").exists()
    assert not any(alive(pid) for pid in pids)


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_up_in_the_foreground_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    data_dir = tmp_path / "fg"
    # Started with SIGINT ignored, as a shell without job control starts a background command (CI
    # scripts, nohup ... &): SIGINT must stop the stack all the same.
    up = subprocess.Popen([sys.executable, "-m", "reelforge.cli", "up", "--data-dir", str(data_dir), "--port",
                           str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    info_file = data_dir / "stack.json"
    deadline = time.monotonic() + 120
    while not info_file.exists() and up.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert info_file.exists(), up.stdout.read() if up.stdout else ""
    pids = json.loads(info_file.read_text())["pids"]
    assert set(pids) == {"redis", "seaweedfs", "gateway", "relay", "gpu", "postprocess", "webhooks",
                         "exporter"}
    assert all(alive(pid) for pid in pids.values())
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=60) == 0
    assert not any(alive(pid) for pid in pids.values())
    assert not info_file.exists()


def test_refuses_the_development_storage_secret_in_production() -> None:
    result = reelforge("keys", "create", "--tenant", "acme", env={"REELFORGE_ENVIRONMENT": "production"})
    assert result.returncode == 1
    assert "REELFORGE_S3_SECRET_ACCESS_KEY is the development default" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command, setting", [(("exporter",), "REELFORGE_EXPORTER_PORT"),
                                              (("worker", "webhooks"), "REELFORGE_METRICS_PORT")])
def test_a_taken_metrics_port_is_a_clear_error(command: tuple[str, ...], setting: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = reelforge(*command, env={"REELFORGE_ENVIRONMENT": "development", setting: str(port)}, timeout=60)
    assert result.returncode == 1
    assert f"cannot serve metrics on port {port}" in result.stderr and setting in result.stderr
    assert "Traceback" not in result.stderr
