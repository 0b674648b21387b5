"""A small client for a local stack: submit a prompt, show a progress bar, download the MP4."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

STACK_INFO = "stack.json"
TERMINAL = {"completed", "failed", "cancelled"}


class GenerateError(Exception):
    pass


def load_stack_info(data_dir: Path) -> dict[str, Any] | None:
    """The running stack's URLs and dev credentials, or None when no stack answers there."""
    path = data_dir / STACK_INFO
    if not path.exists():
        return None
    info: dict[str, Any] = json.loads(path.read_text())
    try:
        httpx.get(f"{info['gateway_url']}/healthz", timeout=2).raise_for_status()
    except httpx.HTTPError:
        return None
    return info


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def generate_video(info: dict[str, Any], prompt: str, *, size: str | None, seconds: str | None,
                   seed: int | None, steps: int | None, output: Path) -> tuple[Path, str]:
    body = {"prompt": prompt, "size": size, "seconds": seconds, "seed": seed, "num_steps": steps}
    headers = {"Authorization": f"Bearer {info['api_key']}"}
    with httpx.Client(base_url=info["gateway_url"], headers=headers, timeout=30) as client:
        created = client.post("/v1/videos", json={k: v for k, v in body.items() if v is not None})
        if created.status_code != 200:
            raise GenerateError(f"create refused: {_error(created)}")
        video = created.json()
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn()) as progress:
            bar = progress.add_task(f"{video['id']} queued", total=100)
            while video["status"] not in TERMINAL:
                time.sleep(0.25)
                video = client.get(f"/v1/videos/{video['id']}").json()
                detail = video["phase"] + (f" {video['step']}/{video['steps']}"
                                           if video["phase"] == "denoising" else "")
                if video["status"] in TERMINAL:
                    detail = video["status"]
                progress.update(bar, completed=video["progress"], description=f"{video['id']} {detail}")
        if video["status"] != "completed":
            error = video.get("error") or {}
            raise GenerateError(f"video {video['id']} {video['status']}: {error.get('message', '')}")
        content = client.get(f"/v1/videos/{video['id']}/content")
        content.raise_for_status()
    path = output / f"{video['id']}.mp4" if output.suffix != ".mp4" else output
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.content)
    return path, f"{info['gateway_url']}/v1/videos/{video['id']}/content"
