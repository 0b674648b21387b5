"""The baseline for the create benchmark: a bare FastAPI endpoint that does one Redis write.

Run: uvicorn loadtests.bare_app:app (REDIS_URL in the environment).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from fastapi import FastAPI, Request
from redis.asyncio import Redis

app = FastAPI()
redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@app.post("/v1/videos")
async def create(request: Request) -> dict[str, Any]:
    body = await request.body()
    video_id = f"video_{uuid.uuid4().hex}"
    await redis.set(f"bare:{video_id}", body)
    return {"id": video_id, "object": "video", "status": "queued"}
