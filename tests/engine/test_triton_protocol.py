"""The pipeline's REQUEST payload and the tritonserver command line, without a server."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from reelforge.engine.interface import GenerationRequest
from reelforge.engine.triton.protocol import (
    PIPELINE_MODEL,
    REPOSITORY,
    STAGE_MODELS,
    decode_request,
    encode_request,
)
from reelforge.engine.triton.server import TritonPorts, server_command

REQUEST = GenerationRequest(prompt="a fox", negative_prompt="blur", width=64, height=64, num_frames=16, fps=8,
                            num_steps=4, guidance_scale=2.5, seed=2**32 - 1)


def test_request_round_trips() -> None:
    assert decode_request(encode_request(REQUEST)) == REQUEST


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"prompt": "x"}).encode(), "lacks"),
    (json.dumps({**asdict(REQUEST), "width": "wide"}).encode(), "wrong type"),
])
def test_bad_payload_is_refused_with_what_is_wrong(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_request(payload)


def test_repository_has_a_config_and_model_for_every_model() -> None:
    for name in (*STAGE_MODELS, PIPELINE_MODEL):
        config = (REPOSITORY / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config and (REPOSITORY / name / "1" / "model.py").is_file()
    assert "dynamic_batching" in (REPOSITORY / "dit" / "config.pbtxt").read_text()
    assert "decoupled: true" in (REPOSITORY / PIPELINE_MODEL / "config.pbtxt").read_text()


def test_stub_environment_imports_the_engine_with_the_system_python(tmp_path: Path) -> None:
    """The Python backend stub embeds the system libpython: the environment the launcher builds for it
    must give that Python this interpreter's packages (torch and reelforge)."""
    argv, env = server_command(tmp_path, TritonPorts(grpc=1, http=2, metrics=3), {"PATH": "/usr/bin"})
    assert argv[0].endswith("tritonserver") and "--grpc-port=1" in argv and "--metrics-port=3" in argv
    assert (tmp_path / "backends" / "python" / "triton_python_backend_stub").is_file()
    python = env["PATH"].split(":")[0] + "/python3"
    probe = "import torch, reelforge.engine.triton.serving, sys; print(sys.prefix)"
    result = subprocess.run([python, "-E", "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "stub-env")
