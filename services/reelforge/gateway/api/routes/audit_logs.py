"""/v1/organization/audit_logs: the calling tenant's audit log, for keys with the admin scope."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query

from reelforge.core import audit
from reelforge.gateway.deps import AdminPrincipal, RuntimeDep
from reelforge.gateway.errors import ERROR_RESPONSES, bad_request

router = APIRouter(prefix="/v1/organization/audit_logs", tags=["audit"], responses=ERROR_RESPONSES)

_ENTRY_ID = re.compile(r"^\d{1,19}-\d{1,19}$")  # a Redis stream id; larger numbers would not parse there


@router.get("")
def list_audit_logs(
    rt: RuntimeDep,
    principal: AdminPrincipal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Newest first; `after` is the last id of the previous page. Only the caller's tenant is readable."""
    if after is not None and not _ENTRY_ID.match(after):
        raise bad_request(f"'after' must be an audit log id such as '1763700000000-0'; '{after}' is not.", "after")
    entries = audit.read(rt.redis, principal.tenant, limit + 1, before=after)
    data = entries[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(entries) > limit}
