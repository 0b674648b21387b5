"""/v1/videos: the OpenAI Videos API (create, retrieve, list, delete, content) plus cancel."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from reelforge.core import audit, videos
from reelforge.core.contracts import VideoObject
from reelforge.core.jobs import JobRecord
from reelforge.core.storage import ObjectNotFound, asset_key
from reelforge.core.store import (
    AsyncJobCreator,
    ConcurrencyLimited,
    IdempotencyConflict,
    KeyRevoked,
    RateLimited,
)
from reelforge.core.tenants import Principal
from reelforge.core.webhook_targets import TargetPolicy
from reelforge.gateway.abuse import (
    admission_for,
    check_prompt,
    check_queues,
    concurrency_limited,
    rate_limited,
)
from reelforge.gateway.deps import CreatePrincipal, ReadPrincipal, RuntimeDep, authenticate, invalid_key
from reelforge.gateway.errors import ERROR_RESPONSES, APIError, bad_request, not_found
from reelforge.gateway.lists import PageDep, list_object
from reelforge.gateway.validation import (
    CreateVideoBody,
    check_webhook_destination,
    form_to_dict,
    json_to_dict,
    parse_create,
    request_hash,
)
from reelforge.observability import metrics
from reelforge.observability.tracing import current_traceparent
from reelforge.postprocess.assets import ASSETS
from reelforge.runtime import Runtime

router = APIRouter(prefix="/v1/videos", tags=["videos"], responses=ERROR_RESPONSES)

# create_video reads its body itself (JSON or form); this documents both in the OpenAPI schema.
_CREATE_SCHEMA = CreateVideoBody.model_json_schema(ref_template="#/components/schemas/{model}")
_CREATE_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _CREATE_SCHEMA},
    "multipart/form-data": {"schema": _CREATE_SCHEMA},
}}}

POLL_AFTER_MS = "1000"
MAX_IDEMPOTENCY_KEY = 255
MAX_FORM_FIELDS = 64


async def _read_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data" or content_type == "application/x-www-form-urlencoded":
        try:
            form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        except (MultiPartException, StarletteHTTPException) as exc:  # Starlette turns the first into the second
            detail = exc.message if isinstance(exc, MultiPartException) else exc.detail
            raise bad_request(f"Malformed form body: {detail} Send text fields only, at most {MAX_FORM_FIELDS}, "
                              "with the boundary named in Content-Type.", code="invalid_body") from None
        return form_to_dict(list(form.multi_items()))
    if content_type in ("application/json", ""):
        return json_to_dict(await request.body())
    raise APIError(415, f"Unsupported Content-Type '{content_type}'; send application/json or "
                        "multipart/form-data.", code="unsupported_media_type")


def _owned(rt: Runtime, tenant: str, video_id: str) -> JobRecord:
    job = rt.store.get_for_tenant(tenant, video_id)
    if job is None:
        raise not_found(video_id)
    return job


def _audit(rt: Runtime, principal: Principal, action: str, video_id: str, outcome: str = "ok") -> None:
    audit.record(rt.redis, audit.entry(principal.tenant, principal.key_id, action, video_id, outcome),
                 rt.settings.audit_max_entries)


def _video_response(job: JobRecord, headers: dict[str, str] | None = None) -> Response:
    # Serialised once by pydantic-core; skips FastAPI's second validation of the return value.
    return Response(job.video_json(), media_type="application/json", headers=headers)


@router.post("", response_model=VideoObject, openapi_extra=_CREATE_BODY)
async def create_video(request: Request) -> Response:
    """The hot path: authentication, state and headers are read directly; resolving them as injected
    dependencies cost 14 % of the gateway's CPU per create."""
    principal = await authenticate(request, "create", cached=True)
    rt: Runtime = request.app.state.runtime
    creator: AsyncJobCreator = request.app.state.creator
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise bad_request(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters.", "Idempotency-Key")
    policy = TargetPolicy(allow_private=rt.settings.webhook_allow_private)
    params, body = parse_create(await _read_body(request), policy)
    await check_prompt(request, principal, params.prompt)
    if params.webhook_url is not None:
        await run_in_threadpool(check_webhook_destination, params.webhook_url, policy)
    await check_queues(request, params.priority)
    job = videos.new_job(principal.tenant, **params.model_dump(), traceparent=current_traceparent())
    idempotency = (idempotency_key, request_hash(body)) if idempotency_key else None
    try:
        stored, created = await creator.create(job, idempotency, rt.settings.idempotency_ttl_s,
                                               admission_for(rt.settings, principal))
    except IdempotencyConflict:
        raise APIError(409, "This Idempotency-Key was already used with a different request body; use a "
                            "new key for a new request.", param="Idempotency-Key",
                       code="idempotency_key_reused") from None
    except KeyRevoked:
        raise invalid_key() from None
    except RateLimited as exc:
        raise rate_limited(exc) from None
    except ConcurrencyLimited as exc:
        raise concurrency_limited(exc, rt.settings) from None
    if created:
        metrics.job_created(stored)
    return _video_response(stored)


@router.get("")
def list_videos(rt: RuntimeDep, principal: ReadPrincipal, page: PageDep) -> dict[str, Any]:
    if page.after is not None and rt.store.get_for_tenant(principal.tenant, page.after) is None:
        raise bad_request(f"'after' must be the id of one of your videos; '{page.after}' is not.", "after")
    jobs, has_more = rt.store.list(principal.tenant, page.after, page.limit, page.order)
    return list_object([job.to_video().model_dump(mode="json") for job in jobs], has_more)


@router.get("/{video_id}", response_model=VideoObject)
def retrieve_video(video_id: str, rt: RuntimeDep, principal: ReadPrincipal) -> Response:
    job = _owned(rt, principal.tenant, video_id)
    headers = None if job.is_terminal else {"openai-poll-after-ms": POLL_AFTER_MS}
    return _video_response(job, headers)


@router.post("/{video_id}/cancel")
def cancel_video(video_id: str, rt: RuntimeDep, principal: CreatePrincipal) -> VideoObject:
    """reelforge extension: stop a queued or running job but keep its record."""
    job = _owned(rt, principal.tenant, video_id)
    try:
        cancelled = videos.cancel(rt, job).to_video()
    except videos.NotCancellable as exc:
        _audit(rt, principal, "video.cancel", video_id, "video_not_cancellable")
        raise APIError(409, f"Video '{video_id}' is already {exc.status} and cannot be cancelled.",
                       param="video_id", code="video_not_cancellable") from None
    _audit(rt, principal, "video.cancel", video_id)
    return cancelled


@router.delete("/{video_id}")
def delete_video(video_id: str, rt: RuntimeDep, principal: CreatePrincipal) -> dict[str, Any]:
    job = _owned(rt, principal.tenant, video_id)
    videos.delete(rt, job)
    _audit(rt, principal, "video.delete", video_id)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get("/{video_id}/content")
def download_content(
    video_id: str,
    rt: RuntimeDep,
    principal: ReadPrincipal,
    variant: Literal["video", "thumbnail", "spritesheet"] = "video",
) -> StreamingResponse:
    job = _owned(rt, principal.tenant, video_id)
    if job.status != "completed":
        raise APIError(404, f"Video '{video_id}' has no content yet: its status is {job.status}.",
                       param="video_id", code="content_not_ready")
    name, content_type = ASSETS[variant]
    try:
        chunks, length, _ = rt.storage.open_stream(asset_key(job.tenant, job.id, name))
    except ObjectNotFound:
        raise APIError(404, f"The {variant} of video '{video_id}' is no longer stored.", param="variant",
                       code="content_expired") from None
    return StreamingResponse(chunks, media_type=content_type, headers={
        "content-length": str(length),
        "content-disposition": f'inline; filename="{video_id}.{name.rsplit(".", 1)[1]}"',
    })
