"""One settings class for every reelforge process, read from REELFORGE_* environment variables.

Validated at start-up: a production deployment refuses development-only conveniences.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

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
    engine_factory: str | None = Field(
        default=None,
        description="test hook, development only: 'module:callable' that the GPU worker calls with these settings "
        "instead of loading the engine itself (the fault-injection tests wrap the engine to make it slow or raise)",
    )

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
    broker_visibility_timeout_s: int | None = Field(
        default=None, ge=1,
        description="seconds after which the broker hands an unacknowledged message to another worker; unset: "
        "twice the GPU hard time limit plus 60 s. The fault tests set it short to prove a job is still run once",
    )
    gpu_lease_s: float = Field(
        default=30.0, gt=0,
        description="a running GPU attempt holds its job's lease this long, renewed at every step; a duplicate "
        "message (visibility timeout, relay republish) that finds it held waits this long and looks again, so a "
        "job never runs twice at once. A worker killed mid-job delays its job's next attempt by up to this much",
    )
    storage_retry_s: float = Field(
        default=120.0, ge=0,
        description="how long a worker retries object storage (restarting, unreachable) before it gives up",
    )
    asset_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    idempotency_ttl_s: int = 24 * 3600

    max_body_bytes: int = 64 * 1024
    # A create body is at most max_body_bytes: even a slow mobile link sends it well within this.
    body_read_timeout_s: float = Field(default=30.0, gt=0, description="a request body not fully received "
                                       "this long after the gateway starts reading it is refused with 408")

    # C2PA Content Credentials on every MP4 (docs/security.md); unset: the MP4 carries provenance tags only.
    c2pa_cert_chain: Path | None = Field(
        default=None, description="PEM: the signing certificate first, then intermediates, never the root")
    c2pa_private_key: Path | None = Field(default=None, description="PEM private key of the signing certificate")
    c2pa_trust_anchors: Path | None = Field(
        default=None, description="PEM root(s) that `reelforge provenance verify` reports as Trusted")

    webhook_timeout_s: float = Field(default=15.0, gt=0, description="connect, send and read budget of one attempt")
    webhook_retry_schedule_s: list[Annotated[float, Field(ge=0)]] = Field(
        default=[0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400], min_length=1,
        description="seconds before each attempt, counted from the previous one's end (Standard Webhooks: "
        "immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h); its length is the number of attempts",
    )
    webhook_retry_jitter: float = Field(default=0.1, ge=0, le=0.5,
                                        description="each delay is drawn uniformly within +-this fraction of it")
    webhook_retry_after_max_s: float = Field(default=86400, ge=0,
                                             description="the longest Retry-After (on 429/503) that is honoured")
    webhook_allow_private: bool = Field(
        default=False, description="development only: allow http:// and loopback or private webhook targets "
        "(refused in production)")

    store_wait_s: float = Field(default=120.0, ge=0, description="how long a worker whose task met Redis down "
                                "or full waits for it to take writes again before putting the message back")
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
        return self.broker_visibility_timeout_s or self.gpu_task_time_limit_s * 2 + 60

    @model_validator(mode="after")
    def _c2pa_chain_and_key_together(self) -> Settings:
        if (self.c2pa_cert_chain is None) != (self.c2pa_private_key is None):
            raise ValueError("set both REELFORGE_C2PA_CERT_CHAIN and REELFORGE_C2PA_PRIVATE_KEY, or neither")
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment != "production":
            return self
        if self.s3_secret_access_key == "reelforge-secret":
            raise ValueError(
                "REELFORGE_S3_SECRET_ACCESS_KEY is the development default; set a real secret "
                "or REELFORGE_ENVIRONMENT=development"
            )
        if self.webhook_allow_private:
            raise ValueError(
                "REELFORGE_WEBHOOK_ALLOW_PRIVATE lets webhooks reach internal addresses over plain http; "
                "unset it, or set REELFORGE_ENVIRONMENT=development"
            )
        if self.engine_factory:
            raise ValueError(
                "REELFORGE_ENGINE_FACTORY is a test hook; unset it, or set REELFORGE_ENVIRONMENT=development"
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
