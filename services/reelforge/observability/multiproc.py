"""prometheus-client's multiprocess mode for processes that fork (Celery prefork, uvicorn --workers).

Kept apart from metrics.py: the directory must be chosen before prometheus_client is first imported.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir(role: str) -> Path:
    """Point prometheus-client at a fresh directory for this deployable's processes (values left by an
    earlier run would otherwise be added to this one's)."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("use_multiprocess_dir must run before prometheus_client is imported")
    path = Path(tempfile.gettempdir()) / f"reelforge-metrics-{role}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    atexit.register(_remove_if_owner, path, os.getpid())
    return path


def _remove_if_owner(path: Path, owner: int) -> None:
    # Forked children inherit atexit hooks: only the process that made the directory removes it.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)
