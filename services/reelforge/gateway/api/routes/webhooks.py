"""/v1/webhooks: the tenant's delivery log, replay, disabled endpoints and signing-secret rotation.

Every route is tenant-scoped: another tenant's delivery is a 404, never a hint. Each route names the
API-key scope it needs in its OpenAPI operation (`x-reelforge-scope`: read, create or admin).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from reelforge.gateway.deps import PrincipalDep, RuntimeDep
from reelforge.gateway.errors import ERROR_RESPONSES, APIError, bad_request
from reelforge.gateway.lists import PageDep, list_object

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)

READ_ONLY = {"x-reelforge-scope": "read"}
CREATE = {"x-reelforge-scope": "create"}
ADMIN = {"x-reelforge-scope": "admin"}
MAX_OVERLAP_HOURS = 30 * 24


class EndpointBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2048)


class RotateSecretBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_hours: float = Field(default=24, ge=0, le=MAX_OVERLAP_HOURS,
                                 description="how long the current secret keeps signing too")


def _delivery_not_found(event_id: str) -> APIError:
    return APIError(404, f"No webhook delivery found with id '{event_id}'.", param="event_id", code="not_found")


@router.get("/deliveries", openapi_extra=READ_ONLY)
def list_deliveries(rt: RuntimeDep, principal: PrincipalDep, page: PageDep) -> dict[str, Any]:
    """Webhook events of your videos (newest first by default), each with every delivery attempt."""
    if page.after is not None and rt.deliveries.get(principal.tenant, page.after) is None:
        raise bad_request(f"'after' must be the id of one of your webhook deliveries; '{page.after}' is not.",
                          "after")
    return list_object(*rt.deliveries.page(principal.tenant, page.after, page.limit, page.order))


@router.get("/deliveries/{event_id}", openapi_extra=READ_ONLY)
def retrieve_delivery(event_id: str, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    delivery = rt.deliveries.get(principal.tenant, event_id)
    if delivery is None:
        raise _delivery_not_found(event_id)
    return delivery


@router.post("/deliveries/{event_id}/replay", openapi_extra=CREATE)
def replay_delivery(event_id: str, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Send the event again with the same webhook-id (receivers deduplicate on it): a pending event's
    next attempt becomes due now; a delivered or dead-lettered one starts a new run of attempts."""
    delivery = rt.deliveries.get(principal.tenant, event_id)
    if delivery is None:
        raise _delivery_not_found(event_id)
    if rt.deliveries.endpoint_disabled(principal.tenant, delivery["url"]):
        raise APIError(409, f"The endpoint {delivery['url']} answered 410 Gone and is disabled; enable it with "
                            "POST /v1/webhooks/endpoints/enable, then replay.", param="event_id",
                       code="endpoint_disabled")
    if not rt.deliveries.replay(principal.tenant, event_id):
        raise _delivery_not_found(event_id)
    replayed = rt.deliveries.get(principal.tenant, event_id)
    assert replayed is not None
    return replayed


@router.get("/endpoints/disabled", openapi_extra=READ_ONLY)
def list_disabled_endpoints(rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Endpoints that answered 410 Gone: no event is sent to them until they are enabled again."""
    return {"object": "list", "data": rt.deliveries.disabled_endpoints(principal.tenant)}


@router.post("/endpoints/enable", openapi_extra=ADMIN)
def enable_endpoint(body: EndpointBody, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    if not rt.deliveries.enable_endpoint(principal.tenant, body.url):
        raise APIError(404, f"The endpoint {body.url} is not disabled; GET /v1/webhooks/endpoints/disabled lists "
                            "those that are.", param="url", code="not_found")
    return {"object": "webhook.endpoint", "url": body.url, "disabled": False}


@router.post("/secret/rotate", openapi_extra=ADMIN)
def rotate_secret(rt: RuntimeDep, principal: PrincipalDep, body: RotateSecretBody | None = None) -> dict[str, Any]:
    """A new signing secret, returned once. During the overlap every webhook carries one signature per
    valid secret, so receivers can switch to the new secret at any moment within it."""
    overlap_hours = (body or RotateSecretBody()).overlap_hours
    secret, previous_until = rt.tenants.rotate_webhook_secret(principal.tenant, overlap_hours * 3600)
    return {"object": "webhook.secret", "secret": secret,
            "previous_secret_valid_until": previous_until if overlap_hours > 0 else None}
