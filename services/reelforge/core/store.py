"""Job records in Redis: one hash per job, a per-tenant index, atomic state transitions.

Every transition runs as one Lua script, so "check the current status, then write" cannot interleave
with another process's transition: a cancel racing a completion has exactly one winner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from reelforge.core.contracts import TERMINAL_STATUSES, Phase, Status
from reelforge.core.jobs import GPU_PHASES, JobRecord, allowed_sources, now_ms

PREFIX = "rf"

# KEYS[1] job hash, KEYS[2] active jobs (job id -> tenant), KEYS[3] active count per tenant. ARGV[1]
# comma-separated allowed current statuses, ARGV[2] comma-separated allowed current phases ("" = any),
# ARGV[3] the job id when the target status is terminal (its quota slot is released in the same script,
# so a slot is freed exactly once: HDEL answers 1 only to the first), else "". ARGV[4..] field/value
# pairs. Returns 1 applied, 0 refused, -1 missing.
_TRANSITION = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'phase', 'deleted')
if not cur[1] then return -1 end
if cur[3] == '1' then return 0 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. cur[1] .. ',', 1, true) then return 0 end
if ARGV[2] ~= '' and not string.find(',' .. ARGV[2] .. ',', ',' .. cur[2] .. ',', 1, true) then return 0 end
if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
if ARGV[3] ~= '' then
  local tenant = redis.call('HGET', KEYS[2], ARGV[3])
  if tenant then
    redis.call('HDEL', KEYS[2], ARGV[3])
    if redis.call('HINCRBY', KEYS[3], tenant, -1) <= 0 then redis.call('HDEL', KEYS[3], tenant) end
  end
end
return 1
"""

# KEYS[1] job hash, KEYS[2] the job's GPU lease. ARGV[1] allowed phases, ARGV[2] now ms, ARGV[3] lease ms
# (0: take none). Starts (or re-starts after a lost worker) a GPU attempt: returns the new attempt count,
# 0 when the job is past the GPU stage or terminal, -1 while another attempt holds the lease (it still runs:
# this message is a redelivered or republished duplicate).
_START_GPU_ATTEMPT = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'phase', 'deleted')
if not cur[1] or cur[3] == '1' then return 0 end
if cur[1] ~= 'queued' and cur[1] ~= 'in_progress' then return 0 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. cur[2] .. ',', 1, true) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if cur[1] == 'queued' then redis.call('HSET', KEYS[1], 'at:in_progress', ARGV[2]) end
redis.call('HSET', KEYS[1], 'status', 'in_progress')
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[2], attempt, 'PX', ARGV[3]) end
return attempt
"""

# KEYS[1] the job's GPU lease. ARGV[1] attempt, ARGV[2] lease ms. Extends a running attempt's lease (taking
# it again if it lapsed while no other attempt started); 0 when a newer attempt holds it.
_RENEW_GPU_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE_GPU_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: 1 job hash, 2 tenant index, 3 idempotency key (or ""), 4 outbox, 5 the caller's API key record
# (or "": not checked), 6 tenant info (limit overrides), 7 the tenant's token bucket, 8 active jobs, 9
# active count per tenant, 10 audit stream, 11 the tenant's audit stream.
# ARGV: 1 job id, 2 idempotency record JSON, 3 idempotency TTL s, 4 outbox entry, 5 tenant, 6 rate per s
# (0 = no limit), 7 burst, 8 max concurrent jobs (0 = no limit), 9 audit MAXLEN, 10 key id, 11 trace id,
# 12.. job fields.
# Returns {1, job id} when created; {0, prior idempotency record} when the key was used before; {-1, ""}
# for a key revoked since the gateway cached it; {-2, ms until a token} when the rate limit refuses;
# {-3, limit} when the concurrent-job quota is full.
# The outbox entry is written in the same script as the job (transactional outbox): a job that exists
# is always enqueued eventually, even if the gateway dies right after answering. Its quota slot and its
# audit entry are written there too: no job without both.
_CREATE = """
if KEYS[5] ~= '' then
  local key = redis.call('HMGET', KEYS[5], 'tenant', 'revoked_at')
  if key[1] ~= ARGV[5] or key[2] then return {-1, ''} end
end
if KEYS[3] ~= '' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {0, prior} end
end
local o = redis.call('HMGET', KEYS[6], 'rate_per_s', 'burst', 'max_concurrent_jobs')
local rate, burst, max_jobs = tonumber(o[1] or ARGV[6]), tonumber(o[2] or ARGV[7]), tonumber(o[3] or ARGV[8])
if max_jobs > 0 and tonumber(redis.call('HGET', KEYS[9], ARGV[5]) or '0') >= max_jobs then
  return {-3, tostring(max_jobs)}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if rate > 0 then
  local b = redis.call('HMGET', KEYS[7], 'tokens', 'ms')
  local tokens = burst
  if b[1] then tokens = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate / 1000) end
  if tokens < 1 then return {-2, tostring(math.ceil((1 - tokens) * 1000 / rate))} end
  redis.call('HSET', KEYS[7], 'tokens', tostring(tokens - 1), 'ms', tostring(now))
  redis.call('PEXPIRE', KEYS[7], math.ceil(burst * 1000 / rate) + 1000)
end
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'EX', tonumber(ARGV[3])) end
redis.call('HSET', KEYS[1], unpack(ARGV, 12))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[4])
redis.call('HSET', KEYS[8], ARGV[1], ARGV[5])
redis.call('HINCRBY', KEYS[9], ARGV[5], 1)
local entry = {'tenant', ARGV[5], 'key_id', ARGV[10], 'action', 'video.create', 'resource', ARGV[1],
               'outcome', 'ok', 'trace_id', ARGV[11]}
redis.call('XADD', KEYS[10], 'MAXLEN', '~', ARGV[9], '*', unpack(entry))
redis.call('XADD', KEYS[11], 'MAXLEN', '~', ARGV[9], '*', unpack(entry))
return {1, ARGV[1]}
"""

OUTBOX_KEY = f"{PREFIX}:outbox"
OUTBOX_INFLIGHT_KEY = f"{PREFIX}:outbox:inflight"
# Jobs queued or running, job id -> tenant, and their count per tenant: the concurrent-job quota.
ACTIVE_JOBS_KEY = f"{PREFIX}:active:jobs"
ACTIVE_COUNT_KEY = f"{PREFIX}:active:count"
AUDIT_KEY = f"{PREFIX}:audit"


def tenant_audit_key(tenant: str) -> str:
    return f"{PREFIX}:audit:tenant:{tenant}"


def tenant_info_key(tenant: str) -> str:
    return f"{PREFIX}:tenantinfo:{tenant}"


@dataclass(frozen=True)
class Admission:
    """What the create script checks and records besides the job: the caller's key (re-checked there,
    so a key revoked after the gateway cached it is refused at once), the tenant's limits (settings;
    overrides in the tenant record win) and the audit entry's fields."""

    key_record: str = ""
    key_id: str = ""
    trace_id: str | None = None
    rate_per_s: float = 0.0
    burst: int = 1
    max_concurrent_jobs: int = 0
    audit_max_entries: int = 100_000


class KeyRevoked(Exception):
    pass


class RateLimited(Exception):
    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(retry_after_ms)
        self.retry_after_ms = retry_after_ms


class ConcurrencyLimited(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


# Jobs that used up their GPU attempts and webhook events that used up their deliveries, newest last,
# for on-call to inspect and replay; the queue exporter reports their lengths.
DEAD_LETTER_KINDS = ("jobs", "webhooks")
DEAD_LETTER_MAX = 10_000


def dead_letter_key(kind: str) -> str:
    return f"{PREFIX}:deadletter:{kind}"


def outbox_entry(job: JobRecord) -> str:
    """'priority job_id [traceparent]': the relay publishes inside the job's trace without reading it."""
    return " ".join(part for part in (str(job.priority), job.id, job.traceparent) if part)


def parse_outbox_entry(entry: str) -> tuple[str, str, str | None]:
    """-> (priority, job id, traceparent or None)"""
    priority, job_id, *rest = entry.split(" ", 2)
    return priority, job_id, rest[0] if rest else None


def _create_call(job: JobRecord, idempotency: tuple[str, str] | None, ttl_s: int,
                 admission: Admission) -> tuple[list[str], list[Any]]:
    idem_key = f"{PREFIX}:idem:{job.tenant}:{idempotency[0]}" if idempotency else ""
    idem_record = json.dumps({"job_id": job.id, "body": idempotency[1]}) if idempotency else ""
    keys = [JobStore.job_key(job.id), JobStore.tenant_index_key(job.tenant), idem_key, OUTBOX_KEY,
            admission.key_record, tenant_info_key(job.tenant), f"{PREFIX}:ratelimit:{job.tenant}",
            ACTIVE_JOBS_KEY, ACTIVE_COUNT_KEY, AUDIT_KEY, tenant_audit_key(job.tenant)]
    args = [job.id, idem_record, ttl_s, outbox_entry(job), job.tenant, repr(float(admission.rate_per_s)),
            admission.burst, admission.max_concurrent_jobs, admission.audit_max_entries, admission.key_id,
            admission.trace_id or "", *_flatten(job.to_hash())]
    return keys, args


def _refusal(status: int, value: bytes | str) -> Exception | None:
    """The core exception for a create the script refused (rate, quota, revoked key); None otherwise."""
    if status == -1:
        return KeyRevoked()
    if status == -2:
        return RateLimited(int(value))
    if status == -3:
        return ConcurrencyLimited(int(value))
    return None


def _prior_job_id(value: bytes | str, idempotency: tuple[str, str] | None) -> str:
    """The job a replayed Idempotency-Key refers to; IdempotencyConflict if the body differs."""
    prior = json.loads(value)
    if idempotency is None or prior["body"] != idempotency[1]:
        raise IdempotencyConflict(prior["job_id"])
    return str(prior["job_id"])


def as_text(value: bytes | str) -> str:
    """redis-py returns bytes unless decode_responses is set; its types say bytes | str."""
    return value.decode() if isinstance(value, bytes) else value


def _record(fields: Mapping[bytes | str, bytes | str]) -> JobRecord:
    return JobRecord.from_hash({as_text(k): as_text(v) for k, v in fields.items()})


def lex_page(redis: Redis, index: str, after: str | None, limit: int,
             order: Literal["asc", "desc"]) -> tuple[list[str], bool]:
    """One page of a sorted set of time-ordered ids (all scored 0, so in lexicographic order) after the
    cursor `after`: (ids, whether more follow)."""
    if order == "asc":
        ids = redis.zrangebylex(index, f"({after}" if after else "-", "+", start=0, num=limit + 1)
    else:
        ids = redis.zrevrangebylex(index, f"({after}" if after else "+", "-", start=0, num=limit + 1)
    return [as_text(i) for i in ids[:limit]], len(ids) > limit


def out_of_memory(exc: RedisError) -> bool:
    """Redis at maxmemory (noeviction) refusing a write: OutOfMemoryError for a plain command, a script
    error carrying the OOM message inside a Lua script."""
    return isinstance(exc, OutOfMemoryError) or "OOM command not allowed" in str(exc)


def store_unavailable(exc: BaseException) -> bool:
    """Redis down, restarting, out of reach or full: the operation may succeed later, nothing is wrong
    with the job itself."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return True
    return isinstance(exc, RedisError) and out_of_memory(exc)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def _csv(values: Iterable[str]) -> str:
    return ",".join(str(v) for v in values)


def _flatten(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


class JobStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._transition = redis.register_script(_TRANSITION)
        self._start_gpu = redis.register_script(_START_GPU_ATTEMPT)
        self._renew_gpu_lease = redis.register_script(_RENEW_GPU_LEASE)
        self._release_gpu_lease = redis.register_script(_RELEASE_GPU_LEASE)
        self._create = redis.register_script(_CREATE)

    @staticmethod
    def job_key(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}"

    @staticmethod
    def tenant_index_key(tenant: str) -> str:
        return f"{PREFIX}:tenant:{tenant}:videos"

    def create(
        self, job: JobRecord, idempotency: tuple[str, str] | None = None, idempotency_ttl_s: int = 86400,
        admission: Admission = Admission(),
    ) -> tuple[JobRecord, bool]:
        """Persist a new job. With (key, body_hash), a repeated key returns the first job instead.

        Raises IdempotencyConflict when the key was used with a different body; KeyRevoked, RateLimited
        or ConcurrencyLimited when admission refuses it (nothing is written then).
        """
        keys, args = _create_call(job, idempotency, idempotency_ttl_s, admission)
        created, value = self._create(keys=keys, args=args)
        if (refused := _refusal(created, value)) is not None:
            raise refused
        if created:
            return job, True
        prior_id = _prior_job_id(value, idempotency)
        existing = self.get(prior_id)
        if existing is None:  # purged: the key no longer protects anything
            raise IdempotencyConflict(prior_id)
        return existing, False

    def get(self, job_id: str) -> JobRecord | None:
        fields = self.redis.hgetall(self.job_key(job_id))
        return _record(fields) if fields else None

    def get_for_tenant(self, tenant: str, job_id: str) -> JobRecord | None:
        """The job if it exists, belongs to tenant and is not deleted; otherwise None (never a hint)."""
        job = self.get(job_id) if job_id.startswith("video_") else None
        if job is None or job.tenant != tenant or job.deleted:
            return None
        return job

    def list(
        self, tenant: str, after: str | None, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[list[JobRecord], bool]:
        ids, has_more = lex_page(self.redis, self.tenant_index_key(tenant), after, limit, order)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        jobs = [_record(fields) for fields in pipe.execute() if fields]
        return jobs, has_more

    def transition(
        self,
        job_id: str,
        to: Status,
        fields: Mapping[str, str] | None = None,
        *,
        from_statuses: Iterable[Status] | None = None,
        from_phases: Iterable[Phase] = (),
    ) -> bool:
        """Move the job to `to` if the state machine (and the optional phase guard) allows it."""
        sources = allowed_sources(to) if from_statuses is None else frozenset(from_statuses)
        payload = {"status": str(to), **(fields or {})}
        if to is not Status.in_progress:
            payload[f"at:{to}"] = str(now_ms())
        release = job_id if to in TERMINAL_STATUSES else ""
        applied = self._transition(
            keys=[self.job_key(job_id), ACTIVE_JOBS_KEY, ACTIVE_COUNT_KEY],
            args=[_csv(sources), _csv(from_phases), release, *_flatten(payload)],
        )
        return int(applied) == 1

    def update_running(self, job_id: str, fields: Mapping[str, str]) -> bool:
        """Write progress fields while the job is in progress. False means stop: it was cancelled,
        failed or deleted meanwhile."""
        applied = self._transition(
            keys=[self.job_key(job_id), ACTIVE_JOBS_KEY, ACTIVE_COUNT_KEY],
            args=[str(Status.in_progress), "", "", *_flatten(fields)],
        )
        return int(applied) == 1

    @staticmethod
    def gpu_lease_key(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}:gpu_lease"

    def start_gpu_attempt(self, job_id: str, lease_ms: int = 0) -> int:
        """Count a GPU attempt and take the job's lease for lease_ms. 0 means there is nothing for the GPU
        stage to do (idempotent redelivery), -1 that another attempt holds the lease and runs the job."""
        return int(self._start_gpu(keys=[self.job_key(job_id), self.gpu_lease_key(job_id)],
                                   args=[_csv(GPU_PHASES), now_ms(), lease_ms]))

    def renew_gpu_lease(self, job_id: str, attempt: int, lease_ms: int) -> bool:
        """Keep the lease of a running attempt. False: a newer attempt took the job over; stop."""
        return int(self._renew_gpu_lease(keys=[self.gpu_lease_key(job_id)], args=[attempt, lease_ms])) == 1

    def release_gpu_lease(self, job_id: str, attempt: int) -> None:
        self._release_gpu_lease(keys=[self.gpu_lease_key(job_id)], args=[attempt])

    def active_jobs(self, tenant: str) -> int:
        """Jobs of tenant queued or running: what its concurrent-job quota counts."""
        return int(self.redis.hget(ACTIVE_COUNT_KEY, tenant) or 0)

    def dead_letter(self, kind: str, entry: Mapping[str, Any]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(dead_letter_key(kind), json.dumps({**entry, "at": now_ms()}))
        pipe.ltrim(dead_letter_key(kind), -DEAD_LETTER_MAX, -1)
        pipe.execute()

    def mark_deleted(self, job: JobRecord) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.job_key(job.id), mapping={"deleted": "1", "at:deleted": str(now_ms())})
        pipe.zrem(self.tenant_index_key(job.tenant), job.id)
        pipe.execute()


class AsyncJobCreator:
    """The gateway's create path on asyncio Redis: one round trip, no thread hop."""

    def __init__(self, redis: AsyncRedis) -> None:
        self.redis = redis
        self._create = redis.register_script(_CREATE)

    async def create(
        self, job: JobRecord, idempotency: tuple[str, str] | None, idempotency_ttl_s: int, admission: Admission
    ) -> tuple[JobRecord, bool]:
        keys, args = _create_call(job, idempotency, idempotency_ttl_s, admission)
        created, value = await self._create(keys=keys, args=args)
        if (refused := _refusal(created, value)) is not None:
            raise refused
        if created:
            return job, True
        prior_id = _prior_job_id(value, idempotency)
        fields = await self.redis.hgetall(JobStore.job_key(prior_id))
        if not fields:
            raise IdempotencyConflict(prior_id)
        return _record(fields), False
