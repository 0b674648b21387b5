"""The audit log: an append-only record of who created, cancelled or deleted what, which prompts the
content policy refused, and which API keys were made or revoked.

Two Redis streams hold every entry: one for all tenants (operators read it with `reelforge audit`) and one
per tenant (its admin keys read it through the API, and nothing else can reach it there). Each is
trimmed to about `audit_max_entries` (MAXLEN ~). A create's entry is written by the create script itself
(core.store), in the same atomic step as the job; every other entry goes through `record`.
"""

from __future__ import annotations

import getpass
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from reelforge.core.store import AUDIT_KEY, as_text, tenant_audit_key
from reelforge.observability.tracing import current_trace_id


@dataclass(frozen=True)
class AuditEntry:
    tenant: str
    key_id: str  # the API key that acted, or "cli:<user>" for the command line
    action: str  # video.create, video.cancel, video.delete, video.refuse, api_key.create, api_key.revoke
    resource: str  # the video or key acted on
    outcome: str  # ok, or the error code of a refusal
    trace_id: str = ""
    detail: str = ""

    def fields(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry for this uid (a container)
        return "cli"


def entry(tenant: str, key_id: str, action: str, resource: str, outcome: str = "ok",
          detail: str = "") -> AuditEntry:
    """An entry in the current OpenTelemetry trace (the request's), if there is one."""
    return AuditEntry(tenant, key_id, action, resource, outcome, current_trace_id() or "", detail)


def record(redis: Redis, item: AuditEntry, max_entries: int) -> None:
    pipe = redis.pipeline(transaction=True)
    for key in (AUDIT_KEY, tenant_audit_key(item.tenant)):
        pipe.xadd(key, item.fields(), maxlen=max_entries, approximate=True)  # type: ignore[arg-type]
    pipe.execute()


async def record_async(redis: AsyncRedis, item: AuditEntry, max_entries: int) -> None:
    pipe = redis.pipeline(transaction=True)
    for key in (AUDIT_KEY, tenant_audit_key(item.tenant)):
        pipe.xadd(key, item.fields(), maxlen=max_entries, approximate=True)  # type: ignore[arg-type]
    await pipe.execute()


def read(redis: Redis, tenant: str | None, limit: int, before: str | None = None) -> list[dict[str, Any]]:
    """Newest first: one tenant's entries, or every tenant's; `before` is an entry id (exclusive)."""
    key = AUDIT_KEY if tenant is None else tenant_audit_key(tenant)
    rows = redis.xrevrange(key, max=f"({before}" if before else "+", min="-", count=limit) or []
    out = []
    for raw_id, fields in rows:
        item = {as_text(k): as_text(v) for k, v in (fields or {}).items()}
        entry_id = as_text(raw_id or "")
        out.append({"id": entry_id, "object": "audit_log", "time_ms": int(entry_id.split("-")[0]),
                    "tenant": item.get("tenant"), "key_id": item.get("key_id"), "action": item.get("action"),
                    "resource": item.get("resource"), "outcome": item.get("outcome"),
                    "trace_id": item.get("trace_id") or None, "detail": item.get("detail") or None})
    return out
