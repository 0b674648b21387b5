"""Per-process connections shared by a worker's tasks, created on first use (after fork)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from redis import Redis

from reelforge.celery_app import celery_app
from reelforge.core.lifecycle import Publisher
from reelforge.core.storage import ObjectStore
from reelforge.core.store import JobStore
from reelforge.core.tenants import TenantRegistry
from reelforge.settings import Settings, get_settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    redis: Redis
    store: JobStore
    tenants: TenantRegistry
    storage: ObjectStore
    publisher: Publisher


def build_storage(settings: Settings) -> ObjectStore:
    return ObjectStore(
        endpoint_url=settings.s3_endpoint_url,
        public_endpoint_url=settings.s3_public_endpoint_url,
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
    )


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    settings = get_settings()
    redis = Redis.from_url(settings.redis_url, health_check_interval=30, socket_timeout=10)
    return Runtime(
        settings=settings,
        redis=redis,
        store=JobStore(redis),
        tenants=TenantRegistry(redis),
        storage=build_storage(settings),
        publisher=Publisher(celery_app),
    )
