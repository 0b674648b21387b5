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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from reelforge.core.jobs import now_ms
from reelforge.core.store import PREFIX, as_text, tenant_info_key

KEY_PREFIX = "rf_"
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# As long as a generated key (token_urlsafe(32) is 43 characters) or close to it: 32 characters of this
# alphabet are 192 bits.
IMPORTED_KEY_RE = re.compile(rf"^{KEY_PREFIX}[A-Za-z0-9_-]{{32,}}$")


SCOPES = ("create", "read", "admin")
DEFAULT_SCOPES = ("create", "read")
# Keys stored before scopes existed carry no `scopes` field; they keep what every key could do then.
LEGACY_SCOPES = DEFAULT_SCOPES
LIMIT_FIELDS = ("rate_per_s", "burst", "max_concurrent_jobs")
# last_used_at is written at most this often per key: a read is not turned into a write every time.
LAST_USED_GRANULARITY_MS = 60_000

# KEYS[1] key record. ARGV[1] now ms, ARGV[2] granularity ms. -> {tenant, key_id, scopes, revoked_at}
_AUTHENTICATE = """
local r = redis.call('HMGET', KEYS[1], 'tenant', 'key_id', 'scopes', 'revoked_at', 'last_used_at')
if r[1] and not r[4] and tonumber(ARGV[1]) - tonumber(r[5] or '0') >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1])
end
return {r[1], r[2], r[3], r[4]}
"""


class InvalidTenant(ValueError):
    pass


class InvalidKey(ValueError):
    pass


class UnknownKey(LookupError):
    pass


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str
    scopes: frozenset[str] = frozenset(DEFAULT_SCOPES)
    key_digest: str = ""


@dataclass(frozen=True)
class KeyInfo:
    """What `reelforge keys list` shows: everything but the secret (which is not stored)."""

    key_id: str
    tenant: str
    name: str
    scopes: tuple[str, ...]
    created_at: int | None
    revoked_at: int | None
    last_used_at: int | None


def _new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _scopes(raw: bytes | str | None) -> tuple[str, ...]:
    return tuple(as_text(raw).split(",")) if raw else LEGACY_SCOPES


def _ms(raw: bytes | str | None) -> int | None:
    return int(raw) if raw else None


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(scopes)) or DEFAULT_SCOPES
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise InvalidKey(f"unknown scope(s) {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
    return chosen


class TenantRegistry:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._authenticate = redis.register_script(_AUTHENTICATE)

    @staticmethod
    def key_record(digest: str) -> str:
        return f"{PREFIX}:apikey:{digest}"

    tenant_record = staticmethod(tenant_info_key)

    # key_id -> digest of every key made or imported since scopes exist: listing and revoking by id.
    KEY_INDEX = f"{PREFIX}:apikeys"

    def create_key(self, tenant: str, name: str = "default",
                   scopes: Iterable[str] = DEFAULT_SCOPES) -> tuple[str, str]:
        """Create an API key for tenant (creating the tenant if new). Returns (key_id, plaintext key);
        the plaintext is shown once and never stored."""
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        return self._store_key(tenant, api_key, "key_" + secrets.token_hex(8), name, scopes), api_key

    def import_key(self, tenant: str, api_key: str, name: str = "imported",
                   scopes: Iterable[str] = DEFAULT_SCOPES) -> str:
        """Register a key made outside (a deployment's Secret) for tenant; returns its key_id.
        Idempotent: the key_id derives from the key, so importing it again changes nothing but its
        name and scopes. A revoked key stays revoked."""
        if not IMPORTED_KEY_RE.match(api_key):
            raise InvalidKey(
                f"an imported API key must be '{KEY_PREFIX}' and at least 32 characters of A-Z, a-z, 0-9, '_' "
                f"or '-'; make one with: python -c 'import secrets; print(\"{KEY_PREFIX}\" + secrets.token_urlsafe(32))'"
            )
        return self._store_key(tenant, api_key, "key_" + hash_key(api_key)[:16], name, scopes)

    def _store_key(self, tenant: str, api_key: str, key_id: str, name: str, scopes: Iterable[str]) -> str:
        if not TENANT_RE.match(tenant):
            raise InvalidTenant(
                f"tenant {tenant!r} must be 1-63 characters of a-z, 0-9, '_' or '-', starting alphanumeric"
            )
        chosen = check_scopes(scopes)
        self.ensure_tenant(tenant)
        digest = hash_key(api_key)
        record = self.key_record(digest)
        owner = self.redis.hget(record, "tenant")
        if owner is not None and as_text(owner) != tenant:
            raise InvalidKey("this API key already belongs to another tenant")
        self.redis.hsetnx(record, "created_at", str(now_ms()))
        self.redis.hset(record, mapping={"tenant": tenant, "key_id": key_id, "name": name,
                                         "scopes": ",".join(chosen)})
        self.redis.hset(self.KEY_INDEX, key_id, digest)
        return key_id

    def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal; None for an unknown or revoked key. Notes when the key was last used."""
        if not api_key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(api_key)
        tenant, key_id, scopes, revoked = self._authenticate(
            keys=[self.key_record(digest)], args=[now_ms(), LAST_USED_GRANULARITY_MS])
        if tenant is None or key_id is None or revoked is not None:
            return None
        return Principal(tenant=as_text(tenant), key_id=as_text(key_id), scopes=frozenset(_scopes(scopes)),
                         key_digest=digest)

    def revoke(self, key_id: str) -> tuple[KeyInfo, bool]:
        """Revoke a key by id: refused from the next request on. -> (the key, False if it already was)."""
        digest = self.redis.hget(self.KEY_INDEX, key_id)
        if digest is None:
            raise UnknownKey(f"no API key with id {key_id!r}; `reelforge keys list` shows the ids")
        record = self.key_record(as_text(digest))
        newly = bool(self.redis.hsetnx(record, "revoked_at", str(now_ms())))
        info = self._info(as_text(digest))
        assert info is not None
        return info, newly

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        digests = [as_text(d) for d in self.redis.hvals(self.KEY_INDEX)]
        infos = [info for info in map(self._info, digests) if info is not None]
        return sorted((i for i in infos if tenant is None or i.tenant == tenant),
                      key=lambda i: (i.tenant, i.created_at or 0, i.key_id))

    def _info(self, digest: str) -> KeyInfo | None:
        fields = {as_text(k): v for k, v in self.redis.hgetall(self.key_record(digest)).items()}
        if "tenant" not in fields:
            return None
        return KeyInfo(key_id=as_text(fields["key_id"]), tenant=as_text(fields["tenant"]),
                       name=as_text(fields.get("name", b"")), scopes=_scopes(fields.get("scopes")),
                       created_at=_ms(fields.get("created_at")), revoked_at=_ms(fields.get("revoked_at")),
                       last_used_at=_ms(fields.get("last_used_at")))

    def set_limits(self, tenant: str, limits: Mapping[str, float | None]) -> dict[str, str]:
        """Override the settings' rate limit, burst or concurrent-job quota for one tenant (None
        removes an override, falling back to the setting). Returns the overrides now stored."""
        if not TENANT_RE.match(tenant):
            raise InvalidTenant(f"tenant {tenant!r} is not a valid tenant name")
        record = self.tenant_record(tenant)
        for field, value in limits.items():
            assert field in LIMIT_FIELDS, field
            if value is None:
                self.redis.hdel(record, field)
            else:
                self.redis.hset(record, field, repr(value) if isinstance(value, float) else str(value))
        return self.limit_overrides(tenant)

    def limit_overrides(self, tenant: str) -> dict[str, str]:
        values = self.redis.hmget(self.tenant_record(tenant), LIMIT_FIELDS)
        return {f: as_text(v) for f, v in zip(LIMIT_FIELDS, values) if v is not None}

    def ensure_tenant(self, tenant: str) -> None:
        self.redis.hsetnx(self.tenant_record(tenant), "webhook_secret", _new_webhook_secret())

    def tenant_exists(self, tenant: str) -> bool:
        return bool(self.redis.exists(self.tenant_record(tenant)))

    def rotate_webhook_secret(self, tenant: str, overlap_s: float) -> tuple[str, int]:
        """A new signing secret for tenant; the current one stays valid for overlap_s more seconds, so
        until then every webhook carries a signature per valid secret. -> (new secret, the old one's end
        in Unix seconds)."""
        record = self.tenant_record(tenant)
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
        raw = redis.hget(self.tenant_record(tenant), "webhook_secrets_previous")
        now = now_ms()
        return [entry for entry in json.loads(raw or "[]") if entry["valid_until_ms"] > now]

    def webhook_signing_secrets(self, tenant: str) -> list[str]:
        """The secrets a webhook is signed with: the current one first, then those in their overlap."""
        return [self.webhook_secret(tenant), *(entry["secret"] for entry in self._previous_secrets(self.redis, tenant))]

    def webhook_secret(self, tenant: str) -> str:
        secret = self.redis.hget(self.tenant_record(tenant), "webhook_secret")
        if secret is None:
            self.ensure_tenant(tenant)
            secret = self.redis.hget(self.tenant_record(tenant), "webhook_secret")
        assert secret is not None
        return as_text(secret)
