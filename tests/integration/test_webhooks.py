"""Webhooks through the real stack: delivery log and replay per tenant, 410 Gone, Retry-After and
redirects, secret rotation, and the SSRF check at create time."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from reelforge.devstack.stack import Stack
from tests.integration.conftest import WebhookReceiver, new_tenant_key, wait_delivery, wait_terminal
from tests.integration.test_video_lifecycle import done_tenant, stack_secret

pytestmark = pytest.mark.integration


def _video(api: httpx.Client, url: str) -> tuple[str, str]:
    created = api.post("/v1/videos", json={"prompt": "a red circle", "num_steps": 1, "webhook_url": url})
    assert created.status_code == 200, created.text
    video_id = created.json()["id"]
    return video_id, f"msg_{video_id}_completed"


@pytest.fixture()
def hooks() -> Any:
    receiver = WebhookReceiver()
    yield receiver
    receiver.server.shutdown()


def test_the_delivery_log_is_per_tenant_and_paginated(api: httpx.Client, stack: Stack, hooks: WebhookReceiver) -> None:
    events = [_video(api, f"{hooks.url}/log")[1] for _ in range(2)]
    for event_id in events:
        delivery = wait_delivery(api, event_id, "delivered")
        attempt = delivery["attempts"][0]
        assert attempt["status_code"] == 204 and attempt["attempt"] == 1 and attempt["type"] == "video.completed"
        assert attempt["duration_ms"] >= 0 and attempt["at"] > 0
    first = api.get("/v1/webhooks/deliveries", params={"limit": 1}).json()
    assert [d["id"] for d in first["data"]] == [events[1]] and first["has_more"]
    rest = api.get("/v1/webhooks/deliveries", params={"limit": 1, "after": first["last_id"]}).json()
    assert [d["id"] for d in rest["data"]] == [events[0]] and not rest["has_more"]
    assert api.get("/v1/webhooks/deliveries", params={"after": "msg_nope"}).status_code == 400

    with httpx.Client(base_url=stack.info["gateway_url"], timeout=30,
                      headers={"Authorization": f"Bearer {new_tenant_key(stack, 'other-tenant-hooks')}"}) as other:
        assert other.get("/v1/webhooks/deliveries").json()["data"] == []
        for answer in (other.get(f"/v1/webhooks/deliveries/{events[0]}"),
                       other.post(f"/v1/webhooks/deliveries/{events[0]}/replay")):
            assert answer.status_code == 404 and answer.json()["error"]["param"] == "event_id"


def test_410_gone_disables_the_endpoint_until_enabled_then_replay_delivers(
    api: httpx.Client, hooks: WebhookReceiver
) -> None:
    url = f"{hooks.url}/gone"
    hooks.script[:] = [410]
    _, first = _video(api, url)
    assert wait_delivery(api, first, "endpoint_disabled")["attempts"][-1]["status_code"] == 410
    disabled = api.get("/v1/webhooks/endpoints/disabled").json()["data"]
    assert [(d["url"], d["status_code"], d["event_id"]) for d in disabled] == [(url, 410, first)]

    video_id, second = _video(api, url)  # a later event: recorded, not sent
    skipped = wait_delivery(api, second, "endpoint_disabled")
    assert skipped["attempts"][0]["outcome"] == "endpoint_disabled" and "enable it" in skipped["attempts"][0]["error"]
    assert hooks.for_job(video_id) == []
    refused = api.post(f"/v1/webhooks/deliveries/{second}/replay")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "endpoint_disabled"

    assert api.post("/v1/webhooks/endpoints/enable", json={"url": url}).status_code == 200
    assert api.post("/v1/webhooks/endpoints/enable", json={"url": url}).status_code == 404
    assert api.post(f"/v1/webhooks/deliveries/{second}/replay").status_code == 200
    assert wait_delivery(api, second, "delivered")["replays"] == 1
    assert len(hooks.for_job(video_id)) == 1


def test_redirects_are_not_followed_and_retry_after_is_honoured(api: httpx.Client, hooks: WebhookReceiver) -> None:
    hooks.script[:] = [(307, {"location": "http://169.254.169.254/latest/meta-data/"}), (429, {"retry-after": "3"})]
    video_id, event_id = _video(api, f"{hooks.url}/slow")
    delivery = wait_delivery(api, event_id, "delivered")
    assert [a["outcome"] for a in delivery["attempts"]] == ["redirect", "client_error", "delivered"]
    received = hooks.for_job(video_id)
    assert [d["path"] for d in received] == ["/slow"] * 3  # nobody went to the Location
    assert received[2]["at"] - received[1]["at"] >= 2.9  # the schedule says 0.3 s; Retry-After said 3


def test_a_rotated_secret_signs_alongside_the_old_one_during_the_overlap(
    api: httpx.Client, stack: Stack, hooks: WebhookReceiver
) -> None:
    old = stack_secret(stack, done_tenant(stack, api))
    rotated = api.post("/v1/webhooks/secret/rotate", json={"overlap_hours": 1}).json()
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != old and rotated["previous_secret_valid_until"] > 0
    video_id, _ = _video(api, f"{hooks.url}/rotating")
    delivery = hooks.wait_for(video_id)[0]
    assert len(delivery["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(delivery["body"], delivery["headers"])["type"] == "video.completed"

    newest = api.post("/v1/webhooks/secret/rotate", json={"overlap_hours": 0}).json()["secret"]
    video_id, _ = _video(api, f"{hooks.url}/rotated")
    delivery = hooks.wait_for(video_id)[0]
    Webhook(newest).verify(delivery["body"], delivery["headers"])
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(delivery["body"], delivery["headers"])
    bad = api.post("/v1/webhooks/secret/rotate", json={"overlap_hours": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "overlap_hours"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://2130706433/",
                                 "http://[::ffff:169.254.169.254]/", "http://user@127.0.0.1/", "http://100.64.0.1/"])
def test_unsafe_webhook_urls_are_a_400_at_create_time_even_in_development(api: httpx.Client, url: str) -> None:
    answer = api.post("/v1/videos", json={"prompt": "a red circle", "webhook_url": url})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "webhook_url" and error["code"] == "invalid_webhook_url"
    assert error["message"].startswith("'webhook_url' is refused: ")


def test_a_video_without_a_webhook_has_no_delivery(api: httpx.Client) -> None:
    video = api.post("/v1/videos", json={"prompt": "a red circle", "num_steps": 1}).json()
    wait_terminal(api, video["id"])
    assert api.get(f"/v1/webhooks/deliveries/msg_{video['id']}_completed").status_code == 404
    for not_an_event in ("schedule", f"msg_{video['id']}_completed:attempts", "%FF%00"):
        assert api.get(f"/v1/webhooks/deliveries/{not_an_event}").status_code == 404
        assert api.post(f"/v1/webhooks/deliveries/{not_an_event}/replay").status_code == 404
    assert api.get("/v1/webhooks/deliveries", params={"after": "schedule"}).status_code == 400
