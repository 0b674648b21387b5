"""One settings class for every reelforge process, read from REELFORGE_* environment variables.

Validated at start-up: a production deployment refuses development-only conveniences.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REELFORGE_", extra="ignore")

    environment: Literal["development", "production"] = "production"

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Celery shares the Redis server but uses its own database so FLUSHDB on jobs never eats messages.
    broker_url: str | None = None

    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = Field(
        default=None, description="Endpoint used in presigned URLs handed to people; defaults to s3_endpoint_url."
    )
    s3_bucket: str = "reelforge"
    s3_region: str = "us-east-1"
    s3_access_key_id: str = "reelforge"
    s3_secret_access_key: str = "reelforge-secret"

    engine_backend: Literal["inprocess", "triton"] = Field(
        default="inprocess",
        description="where the GPU worker runs the engine: torch in its own process, or Triton Inference "
        "Server at triton_url (docs/triton.md); jobs, progress, cancel and output are the same either way",
    )
    triton_url: str = Field(default="127.0.0.1:8001", description="Triton's gRPC endpoint, host:port")
    engine_device: str = "cpu"
    engine_weights: Path | None = Field(
        default=None,
        description="weights folder written by `reelforge model`; unset serves the weights shipped in the package",
    )
    engine_threads: int = Field(default=0, description="torch intra-op threads; 0 keeps torch's default.")
    engine_load_timeout_s: float = Field(default=600.0, gt=0, description="how long a GPU worker may take to load")

    # Written by a worker process once it can take jobs (the GPU worker: once its engine is warm).
    ready_file: str | None = None
    # Refreshed by a worker while it consumes (and by the relay while it relays); `reelforge worker-health`
    # checks its age. Unset: no heartbeat is written.
    heartbeat_file: str | None = None
    heartbeat_interval_s: float = Field(default=10.0, gt=0)

    # A job that fails this many GPU attempts ends `failed` with code max_attempts_exceeded.
    max_attempts: int = Field(default=3, ge=1)
    # Celery hard time limit for one GPU attempt; the broker visibility timeout is derived from it.
    gpu_task_time_limit_s: int = Field(default=600, ge=10)
    asset_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    idempotency_ttl_s: int = 24 * 3600

    max_body_bytes: int = 64 * 1024

    webhook_timeout_s: float = 15.0
    webhook_max_attempts: int = Field(default=5, ge=1)
    # Backoff between webhook attempts; later issues replace it by the Standard Webhooks schedule.
    webhook_backoff_s: list[float] = [1.0, 5.0, 30.0, 300.0]

    quality_sample_rate: float = Field(default=0.05, ge=0.0, le=1.0,
                                       description="share of clips the GPU worker scores for quality acceptance")
    metrics_port: int = Field(default=9100, ge=0, le=65535,
                              description="a worker's Prometheus endpoint (all its processes); 0 disables it")
    exporter_port: int = Field(default=9101, ge=1, le=65535, description="`reelforge exporter`'s endpoint")
    # Spans are always made (the trace id is stored on each job); this says where they go.
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    otel_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces URL; unset uses OTEL_EXPORTER_OTLP_* or http://localhost:4318"
    )

    # Security and abuse (docs/security.md). Per-tenant overrides of the three limits live in Redis
    # (`reelforge limits`), so they change without a restart.
    rate_limit_per_s: float = Field(default=5.0, ge=0, description="creates per second a tenant's token bucket "
                                    "refills; 0 turns the rate limit off")
    rate_limit_burst: int = Field(default=50, ge=1, description="token bucket size: creates a tenant may send at once")
    max_concurrent_jobs: int = Field(default=100, ge=0, description="jobs a tenant may have queued or running at "
                                     "once; 0 turns the quota off")
    concurrency_retry_after_s: int = Field(default=5, ge=1, description="Retry-After of a concurrent-job quota 429")
    admission_max_queue_depth: int = Field(default=1000, ge=0, description="create answers 503 while a GPU queue "
                                           "(or the outbox) holds more messages; 0 turns the check off")
    admission_max_queue_age_s: float = Field(default=600.0, ge=0, description="create answers 503 while the oldest "
                                             "waiting message of a GPU queue (or the outbox) is older; 0: off")
    admission_check_interval_s: float = Field(default=1.0, gt=0, description="how long a gateway process reuses "
                                              "its last reading of the queues")
    admission_retry_after_s: int = Field(default=15, ge=1, description="Retry-After of an overload 503")
    prompt_blocklist: list[str] = Field(default_factory=list, description="words or phrases refused in prompts: "
                                        "case-insensitive, whole words, after Unicode NFKC normalisation")
    prompt_blocklist_regexes: list[str] = Field(default_factory=list, description="regular expressions refused "
                                                "in prompts, matched case-insensitively on the normalised prompt")
    prompt_classifier: str | None = Field(default=None, description="'package.module:function' deciding on each "
                                          "prompt before enqueue (docs/security.md, Prompt policy)")
    audit_max_entries: int = Field(default=100_000, ge=100, description="audit stream length kept (approximate "
                                   "MAXLEN), for all tenants and for each tenant")

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def visibility_timeout_s(self) -> int:
        # Above the hard limit, so a long but healthy task is never redelivered while it still runs.
        return self.gpu_task_time_limit_s * 2 + 60

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and self.s3_secret_access_key == "reelforge-secret":
            raise ValueError(
                "REELFORGE_S3_SECRET_ACCESS_KEY is the development default; set a real secret "
                "or REELFORGE_ENVIRONMENT=development"
            )
        return self

    @field_validator("prompt_blocklist_regexes")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"prompt_blocklist_regexes: {pattern!r} is not a valid regular expression: {exc}") from None
        return patterns


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
