"""Fault injection, scenario 6 (issue 6): webhook receivers that are down or always fail, against the real
stack (gateway, relay, GPU, post-process and webhook workers as separate processes, Redis, SeaweedFS).

a. The receiver is down (nothing listens on its port: connections are refused) for the first attempts,
   then comes up: a later attempt delivers, with a valid signature.
b. The receiver always answers 500: the event is dead-lettered after the last attempt; once the receiver
   is healthy, a replay through the API delivers it with the same webhook-id.

Each scenario runs REELFORGE_FAULT_TRIALS trials (default 2) and reports trials, accepted (create
answered 200), completed (the video completed), lost (an accepted job whose completed event never
reached the receiver with a valid signature: must be 0) and duplicated (webhook-ids the receiver
accepted, 2xx, more than once: must be 0).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis import Redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from reelforge.core.store import dead_letter_key
from reelforge.devstack.processes import free_port
from reelforge.devstack.stack import Stack
from tests.integration.conftest import WEBHOOK_TEST_SCHEDULE, WebhookReceiver, wait_delivery, wait_terminal
from tests.integration.test_video_lifecycle import done_tenant, stack_secret

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("REELFORGE_FAULT_TRIALS", "2"))
ATTEMPTS = len(json.loads(WEBHOOK_TEST_SCHEDULE))
DOWN_FOR = 2  # attempts refused before the receiver of scenario a comes up


@dataclass
class Tally:
    scenario: str
    trials: int = 0
    accepted: int = 0
    completed: int = 0
    lost: int = 0
    accepted_ids: Counter[str] = field(default_factory=Counter)

    @property
    def duplicated(self) -> int:
        return sum(1 for count in self.accepted_ids.values() if count > 1)

    def report(self, record_property: Any) -> None:
        line = (f"fault 6{self.scenario}: trials={self.trials} accepted={self.accepted} completed={self.completed} "
                f"lost={self.lost} duplicated={self.duplicated}")
        print(line)
        record_property(f"fault_6{self.scenario}", line)
        assert self.accepted == self.completed == self.trials
        assert self.lost == 0 and self.duplicated == 0, line


def _secret(stack: Stack, api: httpx.Client) -> str:
    return stack_secret(stack, done_tenant(stack, api))


def _create(api: httpx.Client, tally: Tally, url: str) -> str | None:
    tally.trials += 1
    created = api.post("/v1/videos", json={"prompt": "a red circle moving left", "num_steps": 1, "webhook_url": url})
    if created.status_code != 200:
        return None
    tally.accepted += 1
    video_id: str = created.json()["id"]
    return video_id


def _settle(api: httpx.Client, receiver: WebhookReceiver, video_id: str, secret: str, tally: Tally) -> None:
    """Count the video's end and what the receiver accepted for it; lost unless one accepted delivery
    verifies."""
    tally.completed += wait_terminal(api, video_id)["status"] == "completed"
    accepted = [d for d in receiver.for_job(video_id) if 200 <= d["status"] < 300]
    tally.accepted_ids.update(d["headers"]["webhook-id"] for d in accepted)
    try:
        verified = [Webhook(secret).verify(d["body"], d["headers"]) for d in accepted]
    except WebhookVerificationError:
        verified = []
    if not verified or verified[0]["type"] != "video.completed":
        tally.lost += 1


def test_receiver_down_for_the_first_attempts_gets_a_later_signed_delivery(
    api: httpx.Client, stack: Stack, record_property: Any
) -> None:
    tally, secret = Tally("a"), _secret(stack, api)
    for _ in range(TRIALS):
        port = free_port()  # nothing listens here until the receiver starts
        video_id = _create(api, tally, f"http://127.0.0.1:{port}/down")
        if video_id is None:
            continue
        event_id = f"msg_{video_id}_completed"
        wait_delivery(api, event_id, "pending", timeout=300, min_attempts=DOWN_FOR)
        receiver = WebhookReceiver(port)
        try:
            delivery = wait_delivery(api, event_id, "delivered")
            _settle(api, receiver, video_id, secret, tally)
        finally:
            receiver.server.shutdown()
            receiver.server.server_close()
        outcomes = [a["outcome"] for a in delivery["attempts"]]
        assert outcomes[:DOWN_FOR] == ["network_error"] * DOWN_FOR and outcomes[-1] == "delivered", outcomes
    tally.report(record_property)


def test_receiver_that_always_fails_is_dead_lettered_then_replay_delivers(
    api: httpx.Client, stack: Stack, redis_client: Redis, record_property: Any
) -> None:
    tally, secret = Tally("b"), _secret(stack, api)
    receiver = WebhookReceiver()
    try:
        for _ in range(TRIALS):
            receiver.status = 500
            video_id = _create(api, tally, f"{receiver.url}/failing")
            if video_id is None:
                continue
            event_id = f"msg_{video_id}_completed"
            dead = wait_delivery(api, event_id, "dead_lettered", timeout=300)
            assert [a["status_code"] for a in dead["attempts"]] == [500] * ATTEMPTS
            dead_letters = [json.loads(e) for e in redis_client.lrange(dead_letter_key("webhooks"), 0, -1)]
            assert event_id in {e["event_id"] for e in dead_letters}
            receiver.status = 204
            replayed = api.post(f"/v1/webhooks/deliveries/{event_id}/replay")
            assert replayed.status_code == 200 and replayed.json()["status"] == "pending"
            delivery = wait_delivery(api, event_id, "delivered")
            assert delivery["replays"] == 1 and delivery["attempts"][-1]["status_code"] == 204
            assert {d["headers"]["webhook-id"] for d in receiver.for_job(video_id)} == {event_id}
            _settle(api, receiver, video_id, secret, tally)
    finally:
        receiver.server.shutdown()
    tally.report(record_property)
