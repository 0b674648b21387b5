"""Webhook deliveries in Redis: their state, every attempt (the tenant's delivery log), the retry
schedule, disabled endpoints, replay.

Retries wait in a sorted set (score: when the next attempt is due) that the outbox relay drains onto
the webhooks queue, instead of Celery countdowns: a countdown of hours on the Redis transport sits
unacknowledged in the worker, and once it outlives the broker's visibility_timeout Redis hands it to
another worker as well (the same attempt runs twice), while a worker restart loses its in-memory ETA
timers' place in line. The sorted set survives restarts (AOF) and holds a million pending retries as
cheaply as ten.

An attempt is claimed before it runs: the claim checks that the message's attempt number is the
event's next one and takes a lease (its schedule entry moves to the lease's end), so a duplicate
message is dropped and an attempt whose worker died is published again once the lease has passed.
The scripts read the state hash by a key built inside Lua: one Redis server, not Redis Cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis import Redis

from reelforge.core.contracts import WebhookMessage
from reelforge.core.jobs import now_ms
from reelforge.core.store import DEAD_LETTER_MAX, PREFIX, as_text, dead_letter_key, lex_page

SCHEDULE_KEY = f"{PREFIX}:webhook:schedule"
# What Publisher.webhook makes (msg_<job id>_<status>); anything else a client sends is no event of ours,
# and must not become a key that names another structure (the schedule, an attempts list).
EVENT_ID = re.compile(r"^msg_video_[0-9a-f]{1,64}_(completed|failed|cancelled)$")
LOG_MAX_PER_TENANT = 10_000
DeliveryStatus = Literal["pending", "delivered", "dead_lettered", "endpoint_disabled"]


def state_key(event_id: str) -> str:
    return f"{PREFIX}:webhook:{event_id}"


def attempts_key(event_id: str) -> str:
    return f"{PREFIX}:webhook:{event_id}:attempts"


def tenant_log_key(tenant: str) -> str:
    return f"{PREFIX}:tenant:{tenant}:webhooks"


def disabled_key(tenant: str) -> str:
    return f"{PREFIX}:tenant:{tenant}:webhook_disabled"


# KEYS[1] state, KEYS[2] schedule, KEYS[3] tenant log. ARGV[1] event id, ARGV[2] attempt, ARGV[3] now ms,
# ARGV[4] lease end ms, ARGV[5] TTL s, ARGV[6] log max, ARGV[7..] fields of a new state.
# Returns 1 when this message may run its attempt, 0 when it is stale or another copy holds the lease.
_CLAIM = """
local st = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'lease_until')
if not st[1] then
  if ARGV[2] ~= '1' then return 0 end
  redis.call('HSET', KEYS[1], 'status', 'pending', 'attempt', '1', unpack(ARGV, 7))
  redis.call('ZADD', KEYS[3], 0, ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[6]) - 1)
elseif st[1] ~= 'pending' or st[2] ~= ARGV[2] or (st[3] and tonumber(st[3]) > tonumber(ARGV[3])) then
  return 0
end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""

# KEYS[1] schedule. ARGV[1] now ms, ARGV[2] lease end ms, ARGV[3] batch, ARGV[4] state key prefix.
# Due entries move to the lease's end (published again then if no attempt claimed them); returns
# event id, job id, type, attempt, traceparent ('' if none) for each pending one.
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(due) do
  local f = redis.call('HMGET', ARGV[4] .. id, 'status', 'job_id', 'type', 'attempt', 'traceparent')
  if f[1] == 'pending' then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    for _, v in ipairs({id, f[2], f[3], f[4], f[5] or ''}) do table.insert(out, v) end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# KEYS[1] state, KEYS[2] schedule. ARGV[1] event id, ARGV[2] tenant, ARGV[3] now ms.
# -1 no such event of this tenant; 1 a pending event's next attempt is now due; 2 a finished event
# starts a new run of attempts.
_REPLAY = """
local st = redis.call('HMGET', KEYS[1], 'status', 'tenant')
if not st[1] or st[2] ~= ARGV[2] then return -1 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if st[1] == 'pending' then return 1 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempt', '1', 'next_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'lease_until')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
return 2
"""


@dataclass(frozen=True)
class DueAttempt:
    message: WebhookMessage
    traceparent: str | None


class DeliveryStore:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._claim = redis.register_script(_CLAIM)
        self._take_due = redis.register_script(_TAKE_DUE)
        self._replay = redis.register_script(_REPLAY)

    def claim(self, event_id: str, attempt: int, lease_s: float, new_state: Mapping[str, str]) -> bool:
        """May this message run attempt `attempt` of the event? new_state: event_id, job_id, tenant, type,
        url, traceparent, used when the first attempt creates the event's record."""
        now = now_ms()
        fields = [item for pair in {**new_state, "created_at": str(now)}.items() for item in pair]
        return bool(self._claim(
            keys=[state_key(event_id), SCHEDULE_KEY, tenant_log_key(new_state["tenant"])],
            args=[event_id, str(attempt), now, now + int(lease_s * 1000), self.ttl_s, LOG_MAX_PER_TENANT, *fields],
        ))

    def finish(self, event_id: str, record: Mapping[str, Any], status: DeliveryStatus,
               next_at_ms: int | None = None) -> None:
        """Record an attempt and what follows: the next attempt at next_at_ms (status pending), or the end."""
        state = state_key(event_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(attempts_key(event_id), json.dumps(record))
        pipe.expire(attempts_key(event_id), self.ttl_s)
        pipe.hdel(state, "lease_until")
        if status == "pending":
            assert next_at_ms is not None
            pipe.hset(state, mapping={"attempt": str(record["attempt"] + 1), "next_at": str(next_at_ms)})
            pipe.zadd(SCHEDULE_KEY, {event_id: next_at_ms})
        else:
            pipe.hset(state, mapping={"status": status, "next_at": ""})
            pipe.zrem(SCHEDULE_KEY, event_id)
        if status == "dead_lettered":
            pipe.rpush(dead_letter_key("webhooks"), json.dumps({**record, "at": now_ms()}))
            pipe.ltrim(dead_letter_key("webhooks"), -DEAD_LETTER_MAX, -1)
        pipe.execute()

    def take_due(self, lease_s: float, batch: int = 200) -> list[DueAttempt]:
        now = now_ms()
        flat = self._take_due(keys=[SCHEDULE_KEY], args=[now, now + int(lease_s * 1000), batch, state_key("")])
        values = [as_text(v) for v in flat]
        return [DueAttempt(WebhookMessage(event_id=event_id, job_id=job_id, type=type_, attempt=int(attempt)),
                           traceparent or None)
                for event_id, job_id, type_, attempt, traceparent in zip(*[iter(values)] * 5, strict=True)]

    def replay(self, tenant: str, event_id: str) -> bool:
        """Send the event again (same webhook-id): now, or as a new run of attempts once it has ended.
        False when the tenant has no such event."""
        if not EVENT_ID.match(event_id):
            return False
        return int(self._replay(keys=[state_key(event_id), SCHEDULE_KEY], args=[event_id, tenant, now_ms()])) > 0

    def get(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        """The delivery with all its attempts, or None when the tenant has no such event."""
        if not EVENT_ID.match(event_id):
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(state_key(event_id))
        pipe.lrange(attempts_key(event_id), 0, -1)
        fields, attempts = pipe.execute()
        state = {as_text(k): as_text(v) for k, v in fields.items()}
        if state.get("tenant") != tenant:
            return None
        return _delivery(state, [json.loads(a) for a in attempts])

    def page(self, tenant: str, after: str | None, limit: int,
             order: Literal["asc", "desc"]) -> tuple[list[dict[str, Any]], bool]:
        ids, has_more = lex_page(self.redis, tenant_log_key(tenant), after, limit, order)
        found = [self.get(tenant, event_id) for event_id in ids]
        return [d for d in found if d is not None], has_more

    def disable_endpoint(self, tenant: str, url: str, event_id: str, status_code: int) -> None:
        self.redis.hset(disabled_key(tenant), url, json.dumps(
            {"url": url, "disabled_at": now_ms() // 1000, "event_id": event_id, "status_code": status_code}))

    def endpoint_disabled(self, tenant: str, url: str) -> bool:
        return bool(self.redis.hexists(disabled_key(tenant), url))

    def disabled_endpoints(self, tenant: str) -> list[dict[str, Any]]:
        return [json.loads(v) for v in self.redis.hvals(disabled_key(tenant))]

    def enable_endpoint(self, tenant: str, url: str) -> bool:
        return bool(self.redis.hdel(disabled_key(tenant), url))


def _delivery(state: dict[str, str], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    next_at = state.get("next_at")
    return {
        "id": state["event_id"],
        "object": "webhook.delivery",
        "type": state["type"],
        "video_id": state["job_id"],
        "url": state["url"],
        "status": state["status"],
        "created_at": int(state["created_at"]) // 1000,
        "next_attempt_at": int(next_at) // 1000 if next_at and state["status"] == "pending" else None,
        "replays": int(state.get("replays", 0)),
        "attempts": attempts,
    }
