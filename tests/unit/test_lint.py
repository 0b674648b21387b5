"""Service code stays typed (mypy strict, as configured in pyproject.toml) and ruff-clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REELFORGE_ENVIRONMENT": "development"}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, env=env)


def test_ruff() -> None:
    result = run("ruff", "check", "services", "tests", "loadtests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_service_code() -> None:
    result = run("mypy", "services/reelforge")
    assert result.returncode == 0, result.stdout + result.stderr
