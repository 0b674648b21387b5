"""Tenants, their API keys and webhook signing secrets.

Keys are 256-bit random tokens, so a single SHA-256 is the right storage hash (as for GitHub or Stripe
tokens): a slow password hash would only add latency to every request without adding safety.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from reelforge.core.jobs import now_ms
from reelforge.core.store import PREFIX, as_text

KEY_PREFIX = "rf_"
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# As long as a generated key (token_urlsafe(32) is 43 characters) or close to it: 32 characters of this
# alphabet are 192 bits.
IMPORTED_KEY_RE = re.compile(rf"^{KEY_PREFIX}[A-Za-z0-9_-]{{32,}}$")


class InvalidTenant(ValueError):
    pass


class InvalidKey(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str


def _new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class TenantRegistry:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def _key_record(digest: str) -> str:
        return f"{PREFIX}:apikey:{digest}"

    @staticmethod
    def _tenant_record(tenant: str) -> str:
        return f"{PREFIX}:tenantinfo:{tenant}"

    def create_key(self, tenant: str, name: str = "default") -> tuple[str, str]:
        """Create an API key for tenant (creating the tenant if new). Returns (key_id, plaintext key);
        the plaintext is shown once and never stored."""
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        return self._store_key(tenant, api_key, "key_" + secrets.token_hex(8), name), api_key

    def import_key(self, tenant: str, api_key: str, name: str = "imported") -> str:
        """Register a key made outside (a deployment's Secret) for tenant; returns its key_id.
        Idempotent: the key_id derives from the key, so importing it again changes nothing."""
        if not IMPORTED_KEY_RE.match(api_key):
            raise InvalidKey(
                f"an imported API key must be '{KEY_PREFIX}' and at least 32 characters of A-Z, a-z, 0-9, '_' "
                f"or '-'; make one with: python -c 'import secrets; print(\"{KEY_PREFIX}\" + secrets.token_urlsafe(32))'"
            )
        return self._store_key(tenant, api_key, "key_" + hash_key(api_key)[:16], name)

    def _store_key(self, tenant: str, api_key: str, key_id: str, name: str) -> str:
        if not TENANT_RE.match(tenant):
            raise InvalidTenant(
                f"tenant {tenant!r} must be 1-63 characters of a-z, 0-9, '_' or '-', starting alphanumeric"
            )
        self.ensure_tenant(tenant)
        record = self._key_record(hash_key(api_key))
        owner = self.redis.hget(record, "tenant")
        if owner is not None and as_text(owner) != tenant:
            raise InvalidKey("this API key already belongs to another tenant")
        self.redis.hsetnx(record, "created_at", str(now_ms()))
        self.redis.hset(record, mapping={"tenant": tenant, "key_id": key_id, "name": name})
        return key_id

    def authenticate(self, api_key: str) -> Principal | None:
        if not api_key.startswith(KEY_PREFIX):
            return None
        record = self.redis.hmget(self._key_record(hash_key(api_key)), "tenant", "key_id")
        if record[0] is None or record[1] is None:
            return None
        return Principal(tenant=as_text(record[0]), key_id=as_text(record[1]))

    def ensure_tenant(self, tenant: str) -> None:
        self.redis.hsetnx(self._tenant_record(tenant), "webhook_secret", _new_webhook_secret())

    def tenant_exists(self, tenant: str) -> bool:
        return bool(self.redis.exists(self._tenant_record(tenant)))

    def rotate_webhook_secret(self, tenant: str, overlap_s: float) -> tuple[str, int]:
        """A new signing secret for tenant; the current one stays valid for overlap_s more seconds, so
        until then every webhook carries a signature per valid secret. -> (new secret, the old one's end
        in Unix seconds)."""
        record = self._tenant_record(tenant)
        new_secret = _new_webhook_secret()
        valid_until_ms = now_ms() + int(overlap_s * 1000)

        def swap(pipe: Pipeline) -> None:
            current = pipe.hget(record, "webhook_secret")
            kept = self._previous_secrets(pipe, tenant)
            if current is not None and overlap_s > 0:
                kept.append({"secret": as_text(current), "valid_until_ms": valid_until_ms})
            pipe.multi()
            pipe.hset(record, mapping={"webhook_secret": new_secret, "webhook_secrets_previous": json.dumps(kept)})

        self.redis.transaction(swap, record)
        return new_secret, valid_until_ms // 1000

    def _previous_secrets(self, redis: Redis | Pipeline, tenant: str) -> list[dict[str, Any]]:
        """Earlier secrets still inside their overlap."""
        raw = redis.hget(self._tenant_record(tenant), "webhook_secrets_previous")
        now = now_ms()
        return [entry for entry in json.loads(raw or "[]") if entry["valid_until_ms"] > now]

    def webhook_signing_secrets(self, tenant: str) -> list[str]:
        """The secrets a webhook is signed with: the current one first, then those in their overlap."""
        return [self.webhook_secret(tenant), *(entry["secret"] for entry in self._previous_secrets(self.redis, tenant))]

    def webhook_secret(self, tenant: str) -> str:
        secret = self.redis.hget(self._tenant_record(tenant), "webhook_secret")
        if secret is None:
            self.ensure_tenant(tenant)
            secret = self.redis.hget(self._tenant_record(tenant), "webhook_secret")
        assert secret is not None
        return as_text(secret)
