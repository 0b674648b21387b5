"""How to start the tritonserver binary that the nvidia-pytriton wheel ships, with this repository.

The wheel carries tritonserver, the Python backend and a backend stub per Python version; the stub for
this interpreter is copied beside the backend (the backend looks for it in its own folder), into a
backend folder of our own, so the installed wheel is never modified.

The stub is a separate process embedding the system's libpython3.11 (Debian's 3.11.2 here), and it
ignores PYTHONPATH (it runs as `python -E`). It takes its prefix from the first `python3` on PATH and a
pyvenv.cfg beside it, so the launcher builds a small environment for it (stub_environment): the system
Python's standard library, which matches that libpython (pyenv's 3.11.7 library does not: its _ssl
needs symbols 3.11.2 lacks), plus this interpreter's site-packages through a .pth file, so the stub
imports the same torch, transformers and reelforge as the in-process engine.
"""

from __future__ import annotations

import os
import shutil
import site
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reelforge.engine.triton.protocol import REPOSITORY


class TritonNotInstalled(RuntimeError):
    """The nvidia-pytriton wheel (which carries tritonserver) is not installed."""


@dataclass(frozen=True)
class TritonPorts:
    grpc: int
    http: int
    metrics: int


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError:
        raise TritonNotInstalled("tritonserver comes with the nvidia-pytriton wheel: pip install nvidia-pytriton") from None
    return Path(pytriton.__file__).parent / "tritonserver"


def backend_directory(work_dir: Path) -> Path:
    """work_dir/backends: the wheel's Python backend files, plus the stub for this Python."""
    source = pytriton_root()
    target = work_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonNotInstalled(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    for path in (*(source / "backends" / "python").iterdir(), stub):
        if path.is_file() and not (target / path.name).exists():
            shutil.copy2(path, target / path.name)
    return target.parent


def stub_environment(work_dir: Path, base_python: Path = Path("/usr/bin/python3.11")) -> Path:
    """work_dir/stub-env/bin, to put first on the server's PATH (see the module docstring)."""
    if not base_python.exists():
        raise TritonNotInstalled(f"the Python backend stub embeds libpython3.11; {base_python} is missing")
    env_dir = work_dir / "stub-env"
    bin_dir = env_dir / "bin"
    site_dir = env_dir / "lib" / "python3.11" / "site-packages"
    bin_dir.mkdir(parents=True, exist_ok=True)
    site_dir.mkdir(parents=True, exist_ok=True)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(base_python)
    (env_dir / "pyvenv.cfg").write_text(f"home = {base_python.parent}\ninclude-system-site-packages = false\n")
    added = "; ".join(f"site.addsitedir({path!r})" for path in site.getsitepackages())
    (site_dir / "reelforge.pth").write_text(f"import site; {added}\n")
    return bin_dir


def server_command(
    work_dir: Path, ports: TritonPorts, base_env: Mapping[str, str] | None = None, repository: Path = REPOSITORY
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of a tritonserver serving `repository` on loopback, models loaded at start.
    base_env (default: this process's) carries the REELFORGE_ENGINE_* settings the models load with."""
    root = pytriton_root()
    libs = root.parent.parent / "nvidia_pytriton.libs"
    env = dict(os.environ if base_env is None else base_env)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(stub_environment(work_dir)), env.get("PATH", "")))
    env.setdefault("HF_HUB_OFFLINE", "1")
    argv = [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backend_directory(work_dir)}",
        "--http-address=127.0.0.1", f"--http-port={ports.http}",
        "--grpc-address=127.0.0.1", f"--grpc-port={ports.grpc}",
        "--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-port={ports.metrics}",
        "--metrics-address=127.0.0.1",
        "--exit-on-error=true", "--strict-readiness=true", "--log-info=false",
    ]  # fmt: skip
    return argv, env
