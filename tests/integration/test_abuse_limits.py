"""Rate limit, concurrent-job quota, key revocation and the create audit entry, enforced by the job
store's create and transition scripts on a real redis-server."""

from __future__ import annotations

import threading

import pytest
from redis import Redis

from reelforge.core import audit
from reelforge.core.contracts import Phase, Status
from reelforge.core.store import (
    ACTIVE_JOBS_KEY,
    AUDIT_KEY,
    OUTBOX_KEY,
    Admission,
    ConcurrencyLimited,
    JobStore,
    KeyRevoked,
    RateLimited,
)
from reelforge.core.tenants import TenantRegistry
from tests.integration.test_job_store import job

pytestmark = pytest.mark.integration


@pytest.fixture()
def store(redis_server: Redis) -> JobStore:
    redis_server.flushdb()
    return JobStore(redis_server)


def nothing_written(redis: Redis, tenant: str) -> bool:
    return (redis.zcard(JobStore.tenant_index_key(tenant)) == 0 and redis.llen(OUTBOX_KEY) == 0
            and redis.hlen(ACTIVE_JOBS_KEY) == 0 and redis.xlen(AUDIT_KEY) == 0)


def test_token_bucket_allows_the_burst_then_says_when_the_next_token_comes(store: JobStore) -> None:
    limits = Admission(rate_per_s=0.01, burst=3)  # a token every 100 s: nothing refills during the test
    for _ in range(3):
        store.create(job(), admission=limits)
    with pytest.raises(RateLimited) as info:
        store.create(job(), admission=limits)
    assert 50_000 < info.value.retry_after_ms <= 100_000  # less only by what refilled while we ran
    assert store.redis.zcard(JobStore.tenant_index_key("acme")) == 3, "a refused create wrote a job"
    store.create(job("other-tenant"), admission=limits)  # buckets are per tenant
    # 100 s later (the bucket's clock moved back instead), exactly one more token.
    bucket = "rf:ratelimit:acme"
    store.redis.hset(bucket, "ms", int(store.redis.hget(bucket, "ms") or 0) - 100_000)
    store.create(job(), admission=limits)
    with pytest.raises(RateLimited):
        store.create(job(), admission=limits)


def test_a_refused_create_writes_nothing_not_even_its_idempotency_key(store: JobStore) -> None:
    limits = Admission(rate_per_s=0.001, burst=1)
    store.create(job(), admission=limits)
    counts = (store.redis.zcard(JobStore.tenant_index_key("acme")), store.redis.llen(OUTBOX_KEY),
              store.active_jobs("acme"), store.redis.xlen(AUDIT_KEY))
    with pytest.raises(RateLimited):
        store.create(job(), ("retry-me", "body"), admission=limits)
    assert counts == (1, 1, 1, 1)
    assert (store.redis.zcard(JobStore.tenant_index_key("acme")), store.redis.llen(OUTBOX_KEY),
            store.active_jobs("acme"), store.redis.xlen(AUDIT_KEY)) == counts
    # The retry the 429 asks for is a new attempt, not a replay of a job that was never made.
    assert store.create(job(), ("retry-me", "body"))[1] is True


def test_tenant_overrides_beat_the_settings(store: JobStore) -> None:
    TenantRegistry(store.redis).set_limits("acme", {"burst": 1, "max_concurrent_jobs": 0})
    limits = Admission(rate_per_s=0.01, burst=100, max_concurrent_jobs=1)
    store.create(job(), admission=limits)
    store.create(job("other"), admission=limits)
    with pytest.raises(RateLimited):  # burst 1 for acme, however large the setting
        store.create(job(), admission=limits)
    with pytest.raises(ConcurrencyLimited):  # the setting still holds for a tenant without overrides
        store.create(job("other"), admission=Admission(max_concurrent_jobs=1))
    TenantRegistry(store.redis).set_limits("acme", {"burst": None})
    assert TenantRegistry(store.redis).limit_overrides("acme") == {"max_concurrent_jobs": "0"}


def test_quota_is_exact_under_concurrent_creates(store: JobStore) -> None:
    limits = Admission(max_concurrent_jobs=5)
    outcomes: list[str] = []
    barrier = threading.Barrier(24)

    def create() -> None:
        barrier.wait()
        try:
            JobStore(Redis(connection_pool=store.redis.connection_pool)).create(job(), admission=limits)
            outcomes.append("created")
        except ConcurrencyLimited:
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 5 and outcomes.count("refused") == 19
    assert store.active_jobs("acme") == 5


def test_every_terminal_status_frees_its_slot_exactly_once(store: JobStore) -> None:
    limits = Admission(max_concurrent_jobs=3)
    ids = [store.create(job(), admission=limits)[0].id for _ in range(3)]
    with pytest.raises(ConcurrencyLimited):
        store.create(job(), admission=limits)
    store.transition(ids[0], Status.in_progress, {"phase": str(Phase.denoising)})
    assert store.active_jobs("acme") == 3, "starting to run must keep the slot"

    # Racing terminal transitions on each job (completion vs cancel vs failure, each twice): one wins.
    store.transition(ids[1], Status.in_progress)
    store.transition(ids[2], Status.in_progress)
    racers = [(i, s) for i in ids for s in (Status.completed, Status.cancelled, Status.failed) * 2]
    barrier = threading.Barrier(len(racers))
    wins: list[str] = []

    def end(job_id: str, status: Status) -> None:
        barrier.wait()
        if JobStore(Redis(connection_pool=store.redis.connection_pool)).transition(job_id, status):
            wins.append(job_id)

    threads = [threading.Thread(target=end, args=r) for r in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == sorted(ids)
    assert store.active_jobs("acme") == 0 and store.redis.hlen(ACTIVE_JOBS_KEY) == 0
    for _ in range(3):  # all three slots are free again, and not more
        store.create(job(), admission=limits)
    with pytest.raises(ConcurrencyLimited):
        store.create(job(), admission=limits)


def test_a_queued_job_cancelled_or_failed_frees_its_slot(store: JobStore) -> None:
    limits = Admission(max_concurrent_jobs=1)
    first = store.create(job(), admission=limits)[0]
    assert store.transition(first.id, Status.cancelled)
    second = store.create(job(), admission=limits)[0]
    assert store.transition(second.id, Status.failed)
    store.create(job(), admission=limits)


def test_a_key_revoked_after_the_gateway_cached_it_is_refused_by_the_script(store: JobStore) -> None:
    registry = TenantRegistry(store.redis)
    key_id, api_key = registry.create_key("acme")
    principal = registry.authenticate(api_key)
    assert principal is not None
    admission = Admission(key_record=registry.key_record(principal.key_digest), key_id=key_id)
    other = registry.authenticate(registry.create_key("other")[1])
    assert other is not None
    with pytest.raises(KeyRevoked):  # a key of another tenant cannot create for this one
        store.create(job(), admission=Admission(key_record=registry.key_record(other.key_digest)))
    assert nothing_written(store.redis, "acme")
    store.create(job(), admission=admission)
    registry.revoke(key_id)
    with pytest.raises(KeyRevoked):
        store.create(job(), admission=admission)
    assert store.redis.zcard(JobStore.tenant_index_key("acme")) == 1 and store.active_jobs("acme") == 1


def test_create_writes_its_audit_entry_with_key_and_trace(store: JobStore) -> None:
    created = store.create(job(), admission=Admission(key_id="key_abc", trace_id="ab" * 16))[0]
    entries = audit.read(store.redis, "acme", 10)
    assert [(e["action"], e["resource"], e["key_id"], e["trace_id"], e["outcome"]) for e in entries] == [
        ("video.create", created.id, "key_abc", "ab" * 16, "ok")]
    assert audit.read(store.redis, None, 10)[0]["id"] == entries[0]["id"]
    assert audit.read(store.redis, "other", 10) == []


def test_audit_streams_are_trimmed(store: JobStore) -> None:
    item = audit.AuditEntry("acme", "cli", "api_key.create", "key_x", "ok")
    pipe = store.redis.pipeline(transaction=False)
    for _ in range(1200):  # a long history, written untrimmed in one round trip
        pipe.xadd(AUDIT_KEY, item.fields())  # type: ignore[arg-type]
    pipe.execute()
    audit.record(store.redis, item, max_entries=100)
    assert 100 <= store.redis.xlen(AUDIT_KEY) < 300  # MAXLEN ~ trims whole nodes: about, never unbounded


def test_scopes_revocation_and_listing(store: JobStore) -> None:
    registry = TenantRegistry(store.redis)
    key_id, api_key = registry.create_key("acme", "ci", ["read"])
    principal = registry.authenticate(api_key)
    assert principal is not None and principal.scopes == {"read"}
    default_id, default_key = registry.create_key("acme")
    assert registry.authenticate(default_key).scopes == {"create", "read"}  # type: ignore[union-attr]
    listed = {i.key_id: i for i in registry.list_keys("acme")}
    assert set(listed) == {key_id, default_id} and listed[key_id].last_used_at is not None
    assert listed[default_id].last_used_at is not None and listed[key_id].revoked_at is None
    info, newly = registry.revoke(key_id)
    assert newly and info.revoked_at is not None
    assert registry.revoke(key_id)[1] is False
    assert registry.authenticate(api_key) is None
    assert registry.list_keys("nobody") == []
    dump = b"".join(store.redis.dump(k) or b"" for k in store.redis.scan_iter("*"))
    assert api_key.encode() not in dump and default_key.encode() not in dump


def test_a_key_stored_before_scopes_keeps_create_and_read(store: JobStore) -> None:
    registry = TenantRegistry(store.redis)
    _, api_key = registry.create_key("acme")
    principal = registry.authenticate(api_key)
    assert principal is not None
    store.redis.hdel(registry.key_record(principal.key_digest), "scopes")
    assert registry.authenticate(api_key).scopes == {"create", "read"}  # type: ignore[union-attr]
