"""What the create path refuses before a job exists, as HTTP answers: prompts the content policy
refuses (400), overloaded queues (503), and the rate limit and concurrent-job quota that the create
script enforces (429). Every answer says what to change or when to come back."""

from __future__ import annotations

import math

import structlog
from fastapi import Request

from reelforge.core import audit
from reelforge.core.contracts import Priority
from reelforge.core.policy import PolicyDecision, PromptPolicy
from reelforge.core.store import Admission, ConcurrencyLimited, RateLimited
from reelforge.core.tenants import Principal, TenantRegistry
from reelforge.gateway.admission import QueueAdmission
from reelforge.gateway.errors import APIError
from reelforge.observability.tracing import current_trace_id
from reelforge.runtime import Runtime
from reelforge.settings import Settings

log = structlog.get_logger("reelforge.gateway")

POLICY_RETRY_AFTER_S = 30


def admission_for(settings: Settings, principal: Principal) -> Admission:
    return Admission(key_record=TenantRegistry.key_record(principal.key_digest), key_id=principal.key_id,
                     trace_id=current_trace_id(), rate_per_s=settings.rate_limit_per_s,
                     burst=settings.rate_limit_burst, max_concurrent_jobs=settings.max_concurrent_jobs,
                     audit_max_entries=settings.audit_max_entries)


async def check_prompt(request: Request, principal: Principal, prompt: str) -> None:
    policy: PromptPolicy = request.app.state.policy
    rt: Runtime = request.app.state.runtime
    try:
        decision, rule = await policy.decide(prompt, principal.tenant)
    except Exception:  # the classifier is operator code; whatever it raises, the policy fails closed
        log.exception("prompt_classifier_failed", tenant=principal.tenant)
        raise APIError(503, "The content policy check is unavailable; retry shortly.", code="policy_unavailable",
                       headers={"Retry-After": str(POLICY_RETRY_AFTER_S)}) from None
    if decision.allowed:
        return
    await audit.record_async(request.app.state.creator.redis, audit.entry(
        principal.tenant, principal.key_id, "video.refuse", "", "content_policy_violation", rule),
        rt.settings.audit_max_entries)
    raise APIError(400, _refusal_message(decision), param="prompt", code="content_policy_violation")


def _refusal_message(decision: PolicyDecision) -> str:
    # The matched term is never echoed: the client knows what it wrote, and the list stays unlisted.
    return decision.reason or "Your prompt was refused by our content policy; rephrase it and try again."


async def check_queues(request: Request, priority: Priority) -> None:
    admission: QueueAdmission = request.app.state.admission
    overloaded = await admission.check(priority)
    if overloaded is None:
        return
    retry_after = request.app.state.runtime.settings.admission_retry_after_s
    raise APIError(503, f"The service is overloaded: in the {overloaded.queue} queue {overloaded.reason}. "
                        f"Retry after {retry_after} s.", code="overloaded",
                   headers={"Retry-After": str(retry_after)})


def rate_limited(exc: RateLimited) -> APIError:
    seconds = max(1, math.ceil(exc.retry_after_ms / 1000))
    return APIError(429, f"Rate limit reached for creating videos; retry after {seconds} s, or spread your "
                         "requests out.", code="rate_limit_exceeded", type="requests",
                    headers={"Retry-After": str(seconds)})


def concurrency_limited(exc: ConcurrencyLimited, settings: Settings) -> APIError:
    seconds = settings.concurrency_retry_after_s
    return APIError(429, f"You already have {exc.limit} videos queued or in progress, your limit; wait "
                         "for one to finish (or cancel one) before creating another.",
                    code="concurrent_jobs_limit_exceeded", type="requests", headers={"Retry-After": str(seconds)})
