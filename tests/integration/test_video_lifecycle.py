"""Prompt -> MP4 in object storage -> signed webhook, through every real process of the stack."""

from __future__ import annotations

import io
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from reelforge.core.storage import ObjectStore, staging_key
from reelforge.devstack.stack import Stack
from reelforge.provenance.credentials import verify
from tests.integration.conftest import WebhookReceiver, wait_delivery, wait_terminal

pytestmark = pytest.mark.integration


def test_prompt_to_mp4_with_signed_webhook(
    api: httpx.Client, stack: Stack, receiver: WebhookReceiver, storage: ObjectStore, tmp_path: Path
) -> None:
    created = api.post("/v1/videos", json={
        "prompt": "a red circle moving left on a black background", "size": "128x64", "seconds": "2",
        "fps": 12, "num_steps": 3, "seed": 1234, "webhook_url": f"{receiver.url}/hooks",
        "metadata": {"order": "42"}, "priority": "batch",
    })
    assert created.status_code == 200, created.text
    video = created.json()
    assert (video["object"], video["status"], video["progress"]) == ("video", "queued", 0)
    assert (video["size"], video["seconds"], video["fps"], video["steps"], video["seed"]) == ("128x64", "2", 12, 3, 1234)

    done = wait_terminal(api, video["id"])
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and done["step"] == 3 and done["attempts"] == 1
    assert done["completed_at"] >= done["created_at"] and done["expires_at"] > done["completed_at"]
    assert {"queue_wait", "encoding_prompt", "denoising", "decoding", "encoding", "uploading"} <= set(done["timings"])

    mp4 = api.get(f"/v1/videos/{video['id']}/content")
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(mp4.content)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (128, 64)
        assert stream.average_rate == 12
        assert container.metadata.get("reelforge_job_id") == video["id"]
        # the GPU worker's ready file names the engine it loaded: "reelforge-mini <weights version>"
        engine_version = (stack.config.data_dir / "run" / "gpu.ready").read_text().split()[1]
        assert container.metadata.get("reelforge_model_version") == engine_version
    assert len(frames) == 24 and frames[0].shape == (64, 128, 3)
    (tmp_path / "video.mp4").write_bytes(mp4.content)
    credentials = verify(tmp_path / "video.mp4", Path(stack.info["c2pa_trust_anchors"]))
    assert credentials.state == "Trusted", credentials.failures
    assert credentials.claim and credentials.claim["job_id"] == video["id"]

    thumb = api.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
    sprites = api.get(f"/v1/videos/{video['id']}/content", params={"variant": "spritesheet"})
    assert thumb.status_code == sprites.status_code == 200
    assert image_size(thumb.content) == (128, 64)
    assert image_size(sprites.content)[0] > 128

    tenant = done_tenant(stack, api)
    assert storage.exists(f"{tenant}/{video['id']}/video.mp4")
    assert not storage.exists(staging_key(tenant, video["id"])), "staging frames must be removed"

    delivery = receiver.wait_for(video["id"])[0]
    assert delivery["path"] == "/hooks"
    secret = stack_secret(stack, tenant)
    event = Webhook(secret).verify(delivery["body"], delivery["headers"])
    assert event["type"] == "video.completed" and event["data"]["status"] == "completed"
    assert event["data"]["metadata"] == {"order": "42"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(delivery["body"].replace("completed", "failed"), delivery["headers"])


def image_size(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


def done_tenant(stack: Stack, api: httpx.Client) -> str:
    from redis import Redis

    from reelforge.core.tenants import TenantRegistry

    token = api.headers["authorization"].split(" ", 1)[1]
    principal = TenantRegistry(Redis.from_url(stack.info["redis_url"])).authenticate(token)
    assert principal is not None
    return principal.tenant


def stack_secret(stack: Stack, tenant: str) -> str:
    from redis import Redis

    from reelforge.core.tenants import TenantRegistry

    return TenantRegistry(Redis.from_url(stack.info["redis_url"])).webhook_secret(tenant)


def test_same_seed_gives_the_same_video(api: httpx.Client) -> None:
    body = {"prompt": "a blue square moving up", "seed": 99, "num_steps": 2}
    first, second = (api.post("/v1/videos", json=body).json() for _ in range(2))
    decoded = []
    for video in (first, second):
        assert wait_terminal(api, video["id"])["status"] == "completed"
        content = api.get(f"/v1/videos/{video['id']}/content").content
        with av.open(io.BytesIO(content)) as container:
            decoded.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    assert first["id"] != second["id"]
    np.testing.assert_array_equal(decoded[0], decoded[1])


def test_webhook_is_retried_until_accepted_and_every_attempt_recorded(
    api: httpx.Client, receiver: WebhookReceiver
) -> None:
    with receiver.lock:
        receiver.script[:] = [500, 503]
    video = api.post("/v1/videos", json={"prompt": "a green triangle", "num_steps": 1,
                                         "webhook_url": f"{receiver.url}/flaky"}).json()
    deliveries = receiver.wait_for(video["id"], count=3)
    ids = {d["headers"]["webhook-id"] for d in deliveries}
    assert len(ids) == 1, "retries of one event keep its webhook-id so receivers can deduplicate"
    delivery = wait_delivery(api, f"msg_{video['id']}_completed", "delivered")
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 204]
    assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
