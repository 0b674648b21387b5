"""The HTTP contract: bad input refused with nothing enqueued, auth, tenancy, pagination, idempotency,
cancel and delete, and the official openai SDK round trip."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from openai import OpenAI
from redis import Redis

from reelforge.celery_app import ALL_QUEUES
from reelforge.core.storage import ObjectStore
from reelforge.core.store import OUTBOX_INFLIGHT_KEY, OUTBOX_KEY
from reelforge.devstack.stack import Stack
from tests.integration.conftest import WebhookReceiver, new_tenant_key, wait_terminal, wait_until

pytestmark = pytest.mark.integration


def queued_messages(broker: Redis, redis_client: Redis) -> int:
    """Messages waiting anywhere between the gateway and a worker: outbox, relay, broker queues."""
    lists = [redis_client.llen(OUTBOX_KEY), redis_client.llen(OUTBOX_INFLIGHT_KEY)]
    return sum(int(n) for n in lists) + sum(int(broker.llen(q)) for q in ALL_QUEUES)


def quiet(broker: Redis, redis_client: Redis, timeout: float = 60) -> int:
    """Wait until earlier tests' jobs have left every queue, so a count taken now can only grow."""
    deadline = time.monotonic() + timeout
    while (waiting := queued_messages(broker, redis_client)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return waiting


def tenant_jobs(api: httpx.Client) -> int:
    return len(api.get("/v1/videos", params={"limit": 100}).json()["data"])


BAD_JSON_BODIES = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"prompt": "ring\x07ring"}, "prompt"),
    ({"prompt": "ok", "size": "1920x1080"}, "size"),
    ({"prompt": "ok", "seconds": "12"}, "seconds"),
    ({"prompt": "ok", "fps": 60}, "fps"),
    ({"prompt": "ok", "num_steps": 500}, "num_steps"),
    ({"prompt": "ok", "seed": 2**32}, "seed"),
    ({"prompt": "ok", "seed": -5}, "seed"),
    ({"prompt": "ok", "model": "no-such-model"}, "model"),
    ({"prompt": "ok", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ({"prompt": "ok", "unexpected": 1}, "unexpected"),
]


@pytest.mark.parametrize(("body", "param"), BAD_JSON_BODIES)
def test_bad_input_gets_a_4xx_envelope_and_enqueues_nothing(
    api: httpx.Client, broker: Redis, redis_client: Redis, body: dict[str, object], param: str
) -> None:
    before = quiet(broker, redis_client)
    response = api.post("/v1/videos", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert queued_messages(broker, redis_client) == before
    assert tenant_jobs(api) == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b'{"prompt": "unterminated', "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b"--xyz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi", "multipart/form-data; boundary=xyz",
         400, None),
        (b"prompt=hi", "text/plain", 415, "unsupported_media_type"),
        (json.dumps({"prompt": "p" * 70_000}).encode(), "application/json", 413, "body_too_large"),
    ],
)
def test_malformed_bodies_are_refused(
    api: httpx.Client, broker: Redis, redis_client: Redis, content: bytes, content_type: str, status: int,
    code: str | None,
) -> None:
    before = quiet(broker, redis_client)
    response = api.post("/v1/videos", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    assert queued_messages(broker, redis_client) == before
    assert tenant_jobs(api) == 0


def test_body_limit_holds_without_content_length(api: httpx.Client) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"a" * 1024
        yield b'"}'

    response = api.post("/v1/videos", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_auth_is_required_and_health_is_open(stack: Stack) -> None:
    url = stack.info["gateway_url"]
    assert httpx.post(f"{url}/v1/videos", json={"prompt": "x"}).status_code == 401
    bad = httpx.get(f"{url}/v1/videos", headers={"Authorization": "Bearer rf_not-a-key"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{url}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "storage": "ok"}


def test_keys_are_stored_hashed(stack: Stack, redis_client: Redis) -> None:
    key = new_tenant_key(stack, "hash-check")
    dump = b"".join(redis_client.dump(k) or b"" for k in redis_client.scan_iter("rf:*"))
    assert key.encode() not in dump


def test_another_tenants_video_is_a_404_everywhere(api: httpx.Client, stack: Stack) -> None:
    video = api.post("/v1/videos", json={"prompt": "mine", "num_steps": 1}).json()
    other_key = new_tenant_key(stack, "intruder")
    with httpx.Client(base_url=stack.info["gateway_url"],
                      headers={"Authorization": f"Bearer {other_key}"}) as other:
        for method, path in [("GET", ""), ("GET", "/content"), ("DELETE", ""), ("POST", "/cancel")]:
            response = other.request(method, f"/v1/videos/{video['id']}{path}")
            assert response.status_code == 404, (method, path, response.text)
        assert other.get("/v1/videos").json()["data"] == []
    assert wait_terminal(api, video["id"])["status"] == "completed"


def test_cursor_pagination_both_orders(api: httpx.Client) -> None:
    ids = [api.post("/v1/videos", json={"prompt": f"clip {i}", "num_steps": 1}).json()["id"] for i in range(5)]
    seen, after = [], None
    while True:
        page = api.get("/v1/videos", params={"limit": 2, "order": "asc", **({"after": after} if after else {})}).json()
        seen += [v["id"] for v in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids
    desc = api.get("/v1/videos", params={"limit": 3}).json()
    assert [v["id"] for v in desc["data"]] == ids[::-1][:3] and desc["has_more"] is True
    assert api.get("/v1/videos", params={"limit": 0}).status_code == 400
    assert api.get("/v1/videos", params={"after": "video_nope"}).status_code == 400


def test_idempotency_key_returns_the_same_job_and_conflicts_on_a_new_body(
    api: httpx.Client, broker: Redis, redis_client: Redis
) -> None:
    headers = {"Idempotency-Key": "order-7"}
    first = api.post("/v1/videos", json={"prompt": "once", "seed": 3, "num_steps": 1}, headers=headers)
    assert quiet(broker, redis_client) == 0
    again = api.post("/v1/videos", json={"prompt": "once", "seed": 3, "num_steps": 1}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert queued_messages(broker, redis_client) == 0, "a replay must not enqueue a second job"
    conflict = api.post("/v1/videos", json={"prompt": "different", "seed": 3}, headers=headers)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert tenant_jobs(api) == 1


def test_cancel_during_denoising_stops_the_worker(api: httpx.Client, receiver: WebhookReceiver) -> None:
    video = api.post("/v1/videos", json={"prompt": "a long one", "size": "128x128", "seconds": "4",
                                         "num_steps": 50, "webhook_url": receiver.url}).json()
    running = wait_until(api, video["id"], lambda v: v["phase"] == "denoising" and v["step"] >= 1)
    cancelled = api.post(f"/v1/videos/{video['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(3)
    after = api.get(f"/v1/videos/{video['id']}").json()
    assert after["status"] == "cancelled"
    assert after["step"] < 50 and after["step"] >= running["step"]
    time.sleep(2)
    assert api.get(f"/v1/videos/{video['id']}").json()["step"] == after["step"], "worker kept denoising"
    assert api.get(f"/v1/videos/{video['id']}/content").status_code == 404
    event = json.loads(receiver.wait_for(video["id"])[0]["body"])
    assert event["type"] == "video.cancelled"
    assert api.post(f"/v1/videos/{video['id']}/cancel").json()["status"] == "cancelled"


def test_delete_removes_assets_and_hides_the_video(
    api: httpx.Client, storage: ObjectStore, stack: Stack
) -> None:
    video = api.post("/v1/videos", json={"prompt": "short lived", "num_steps": 1}).json()
    assert wait_terminal(api, video["id"])["status"] == "completed"
    deleted = api.delete(f"/v1/videos/{video['id']}")
    assert deleted.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert api.get(f"/v1/videos/{video['id']}").status_code == 404
    assert api.get(f"/v1/videos/{video['id']}/content").status_code == 404
    assert all(v["id"] != video["id"] for v in api.get("/v1/videos").json()["data"])
    token = api.headers["authorization"].split(" ", 1)[1]
    from reelforge.core.tenants import TenantRegistry

    tenant = TenantRegistry(Redis.from_url(stack.info["redis_url"])).authenticate(token).tenant  # type: ignore[union-attr]
    assert not storage.exists(f"{tenant}/{video['id']}/video.mp4")


def test_content_is_404_until_ready(api: httpx.Client) -> None:
    video = api.post("/v1/videos", json={"prompt": "not yet", "num_steps": 20, "size": "128x128"}).json()
    early = api.get(f"/v1/videos/{video['id']}/content")
    assert early.status_code == 404 and early.json()["error"]["code"] == "content_not_ready"
    assert api.get(f"/v1/videos/{video['id']}/content", params={"variant": "poster"}).status_code == 400
    api.delete(f"/v1/videos/{video['id']}")


def test_openai_sdk_round_trip(stack: Stack) -> None:
    key = new_tenant_key(stack, "sdk-user")
    client = OpenAI(base_url=f"{stack.info['gateway_url']}/v1", api_key=key, max_retries=0)
    video = client.videos.create(prompt="a yellow circle moving right", seconds="2", size="64x64")  # type: ignore[arg-type]
    assert video.status == "queued" and video.id.startswith("video_")
    done = client.videos.poll(video.id, poll_interval_ms=200)
    assert done.status == "completed" and done.progress == 100
    assert client.videos.retrieve(video.id).id == video.id
    assert [v.id for v in client.videos.list()] == [video.id]
    content = client.videos.download_content(video.id).read()
    assert content[4:8] == b"ftyp"
    thumbnail = client.videos.download_content(video.id, variant="thumbnail").read()
    assert len(thumbnail) > 0
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True and deleted.object == "video.deleted"
    with pytest.raises(Exception) as info:
        client.videos.retrieve(video.id)
    assert getattr(info.value, "status_code", None) == 404
