"""Per-process connections shared by a worker's tasks, created on first use (after fork)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from reelforge.celery_app import celery_app
from reelforge.core.deliveries import DeliveryStore
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
    deliveries: DeliveryStore


# A restarted or failed-over Redis closes every pooled connection; without retry_on_error redis-py
# surfaces that as an error on the next command instead of reconnecting.
_RETRY_ERRORS = [RedisConnectionError, RedisTimeoutError]
_RETRIES = 5


def redis_client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=10, health_check_interval=30, retry_on_error=_RETRY_ERRORS,
                          retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), _RETRIES))


def async_redis_client(url: str) -> AsyncRedis:
    # No per-command socket_timeout: redis.asyncio wraps every read in asyncio.wait_for for it, about 9 % of
    # the gateway's CPU per create. Dead peers are found by TCP keepalive and the connect timeout instead.
    return AsyncRedis.from_url(url, socket_connect_timeout=5, socket_keepalive=True, health_check_interval=30,
                               retry_on_error=_RETRY_ERRORS,
                               retry=AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), _RETRIES))


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
    redis = redis_client(settings.redis_url)
    return Runtime(
        settings=settings,
        redis=redis,
        store=JobStore(redis),
        tenants=TenantRegistry(redis),
        storage=build_storage(settings),
        publisher=Publisher(celery_app),
        deliveries=DeliveryStore(redis, settings.asset_ttl_s),
    )
