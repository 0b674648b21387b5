"""The webhook delivery store on a real redis-server: claims drop duplicates, the schedule hands out due
attempts once per lease, replay, tenant isolation, secret rotation."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from redis import Redis

from reelforge.core.deliveries import SCHEDULE_KEY, DeliveryStore
from reelforge.core.tenants import TenantRegistry

pytestmark = pytest.mark.integration

STATE = {"event_id": "msg_video_01ab_completed", "job_id": "video_01ab", "tenant": "acme", "type": "video.completed",
         "url": "https://hooks.example/h", "traceparent": ""}
EVENT = STATE["event_id"]


@pytest.fixture()
def deliveries(redis_server: Redis) -> DeliveryStore:
    redis_server.flushdb()
    return DeliveryStore(redis_server, ttl_s=3600)


def _record(attempt: int) -> dict[str, object]:
    return {"event_id": EVENT, "type": "video.completed", "attempt": attempt, "at": 0, "outcome": "server_error"}


def test_a_duplicate_or_stale_attempt_is_not_claimed(deliveries: DeliveryStore) -> None:
    assert deliveries.claim(EVENT, 1, 60, STATE)
    assert not deliveries.claim(EVENT, 1, 60, STATE), "a second copy while the first holds the lease"
    assert deliveries.take_due(lease_s=60) == [], "nor is it published again meanwhile"
    assert not deliveries.claim(EVENT, 2, 60, STATE), "not attempt 2's turn yet"
    deliveries.finish(EVENT, _record(1), "pending", next_at_ms=0)
    assert not deliveries.claim(EVENT, 1, 60, STATE), "attempt 1 is over"
    assert deliveries.claim(EVENT, 2, 60, STATE)
    deliveries.finish(EVENT, {**_record(2), "outcome": "delivered"}, "delivered")
    assert not deliveries.claim(EVENT, 3, 60, STATE)
    delivery = deliveries.get("acme", EVENT)
    assert delivery is not None and delivery["status"] == "delivered" and len(delivery["attempts"]) == 2


def test_due_attempts_are_handed_out_once_per_lease_and_again_if_never_claimed(deliveries: DeliveryStore) -> None:
    assert deliveries.claim(EVENT, 1, 60, STATE)
    deliveries.finish(EVENT, _record(1), "pending", next_at_ms=0)
    due = deliveries.take_due(lease_s=0.2)
    assert [(d.message.event_id, d.message.attempt) for d in due] == [(EVENT, 2)]
    time.sleep(0.3)  # the message was lost before any worker claimed it, and the lease ran out
    assert [d.message.attempt for d in deliveries.take_due(lease_s=60)] == [2]
    assert deliveries.take_due(lease_s=60) == []  # taken again: it waits for the new lease


def test_a_worker_that_died_mid_attempt_is_replaced_after_its_lease(deliveries: DeliveryStore) -> None:
    assert deliveries.claim(EVENT, 1, 0.2, STATE)
    time.sleep(0.3)  # no finish(): the worker died
    assert [d.message.attempt for d in deliveries.take_due(lease_s=60)] == [1]
    assert deliveries.claim(EVENT, 1, 60, STATE)
    assert not deliveries.claim(EVENT, 1, 60, STATE)


def test_replay_restarts_an_ended_event_for_its_tenant_only(deliveries: DeliveryStore, redis_server: Redis) -> None:
    assert deliveries.claim(EVENT, 1, 60, STATE)
    deliveries.finish(EVENT, _record(1), "dead_lettered")
    assert redis_server.zscore(SCHEDULE_KEY, EVENT) is None
    assert not deliveries.replay("someone-else", EVENT) and deliveries.get("someone-else", EVENT) is None
    for not_an_event in ("schedule", f"{EVENT}:attempts", "msg_video_01ab_completed:attempts"):
        assert deliveries.get("acme", not_an_event) is None and not deliveries.replay("acme", not_an_event)
    assert deliveries.replay("acme", EVENT)
    assert [d.message.attempt for d in deliveries.take_due(lease_s=60)] == [1]
    assert deliveries.claim(EVENT, 1, 60, STATE)
    delivery = deliveries.get("acme", EVENT)
    assert delivery is not None and delivery["status"] == "pending" and delivery["replays"] == 1


def test_rotation_keeps_the_old_secret_for_the_overlap_only(redis_server: Redis) -> None:
    registry = TenantRegistry(redis_server)
    registry.ensure_tenant("acme")
    first = registry.webhook_secret("acme")
    second, until = registry.rotate_webhook_secret("acme", overlap_s=3600)
    assert registry.webhook_signing_secrets("acme") == [second, first] and until >= time.time() + 3500
    third, _ = registry.rotate_webhook_secret("acme", overlap_s=0.2)
    time.sleep(0.3)  # second's overlap is over, first's is not
    assert registry.webhook_signing_secrets("acme") == [third, first]
    fourth, _ = registry.rotate_webhook_secret("acme", overlap_s=0)
    assert registry.webhook_signing_secrets("acme") == [fourth, first]


def test_the_cli_rotates_a_tenants_secret_and_enables_an_endpoint(
    redis_server: Redis, deliveries: DeliveryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reelforge.cli import main
    from reelforge.settings import get_settings

    port = redis_server.connection_pool.connection_kwargs["port"]
    monkeypatch.setenv("REELFORGE_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    try:
        unknown = CliRunner().invoke(main, ["webhooks", "rotate-secret", "--tenant", "nobody"])
        assert unknown.exit_code == 2 and "reelforge keys create" in unknown.output
        registry = TenantRegistry(redis_server)
        registry.ensure_tenant("acme")
        old = registry.webhook_secret("acme")
        rotated = CliRunner().invoke(main, ["webhooks", "rotate-secret", "--tenant", "acme", "--overlap-hours", "2"])
        assert rotated.exit_code == 0, rotated.output
        assert registry.webhook_signing_secrets("acme") == [json.loads(rotated.output)["webhook_secret"], old]

        enable = ["webhooks", "enable-endpoint", "--tenant", "acme", "--url", STATE["url"]]
        assert CliRunner().invoke(main, enable).exit_code == 2  # not disabled
        deliveries.disable_endpoint("acme", STATE["url"], EVENT, 410)
        assert CliRunner().invoke(main, enable).exit_code == 0
        assert not deliveries.endpoint_disabled("acme", STATE["url"])
    finally:
        get_settings.cache_clear()
