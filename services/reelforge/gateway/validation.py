"""Turn a create-video request (JSON or multipart form) into validated job parameters.

Every refusal is an APIError naming the parameter and saying what the model accepts.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reelforge.core.catalog import DEFAULT_MODEL, MODELS, ModelSpec
from reelforge.core.contracts import Priority
from reelforge.core.webhook_targets import (
    TargetPolicy,
    UnresolvableHost,
    UnsafeWebhookURL,
    parse_target,
    resolve,
)
from reelforge.gateway.errors import APIError, bad_request

MAX_PROMPT_CHARS = 2000
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
PRODUCTION_WEBHOOKS = TargetPolicy(allow_private=False)
MAX_SEED = 2**32 - 1
ALLOWED_CONTROL = {"\n", "\t"}
# A \uD800-\uDFFF escape: JSON lets a client spell an unpaired UTF-16 surrogate, which no UTF-8 encoder
# (Redis, our own responses) accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class CreateVideoBody(BaseModel):
    """What a client may send; types only. Ranges that depend on the model are checked after."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str = DEFAULT_MODEL
    seconds: str | int | None = None  # the OpenAI SDK sends "4"; plain JSON clients often send 4
    size: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    fps: int | None = None
    num_steps: int | None = None
    guidance_scale: float | None = None
    webhook_url: str | None = None
    metadata: dict[str, str] | None = None
    priority: Priority = Priority.interactive


class VideoParams(BaseModel):
    """Fully resolved parameters: what the job record stores."""

    prompt: str
    model: str
    seconds: str
    size: str
    negative_prompt: str | None
    seed: int
    fps: int
    num_steps: int
    guidance_scale: float
    webhook_url: str | None
    metadata: dict[str, str] = Field(default_factory=dict)
    priority: Priority


def _choices(values: tuple[Any, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _check_text(value: str, param: str, *, required: bool) -> None:
    if required and not value.strip():
        raise bad_request(f"'{param}' must not be empty; describe the video you want.", param)
    if len(value) > MAX_PROMPT_CHARS:
        raise bad_request(
            f"'{param}' is {len(value)} characters; the limit is {MAX_PROMPT_CHARS}. Shorten it.", param
        )
    for ch in value:
        if unicodedata.category(ch) == "Cc" and ch not in ALLOWED_CONTROL:
            raise bad_request(
                f"'{param}' contains the control character U+{ord(ch):04X}; remove it "
                "(only newline and tab are allowed).",
                param,
            )


def _check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(f"'metadata' has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed.",
                          "metadata")
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise bad_request(f"metadata keys must be 1-{MAX_METADATA_KEY} characters; '{key[:80]}' is not.",
                              "metadata")
        if len(value) > MAX_METADATA_VALUE:
            raise bad_request(f"metadata value for '{key}' is over {MAX_METADATA_VALUE} characters.",
                              "metadata")


def _refused_webhook_url(exc: UnsafeWebhookURL) -> APIError:
    return bad_request(f"'webhook_url' is refused: {exc}.", "webhook_url", "invalid_webhook_url")


def check_webhook_url(url: str, policy: TargetPolicy) -> None:
    """The checks that need no DNS (scheme, userinfo, address forms and literal addresses)."""
    try:
        parse_target(url, policy)
    except UnsafeWebhookURL as exc:
        raise _refused_webhook_url(exc) from None


def check_webhook_destination(url: str, policy: TargetPolicy) -> None:
    """Where the name resolves to (blocking: DNS). A name DNS cannot answer for right now is let
    through: every delivery attempt checks again before it connects."""
    try:
        resolve(parse_target(url, policy), policy)
    except UnresolvableHost as exc:
        if exc.permanent:
            raise _refused_webhook_url(exc) from None
    except UnsafeWebhookURL as exc:
        raise _refused_webhook_url(exc) from None


def _resolve(body: CreateVideoBody, spec: ModelSpec) -> VideoParams:
    size = body.size or spec.default_size
    if size not in spec.sizes:
        raise bad_request(f"size '{size}' is not supported by {spec.name}; use one of {_choices(spec.sizes)}.",
                          "size", "unsupported_value")
    seconds = spec.default_seconds if body.seconds is None else str(body.seconds)
    if seconds not in spec.seconds:
        raise bad_request(
            f"seconds '{seconds}' is not supported by {spec.name}; use one of {_choices(spec.seconds)}.",
            "seconds", "unsupported_value")
    fps = spec.default_fps if body.fps is None else body.fps
    if fps not in spec.fps:
        raise bad_request(f"fps {fps} is not supported by {spec.name}; use one of {_choices(spec.fps)}.",
                          "fps", "unsupported_value")
    steps = spec.default_steps if body.num_steps is None else body.num_steps
    if not spec.min_steps <= steps <= spec.max_steps:
        raise bad_request(
            f"num_steps {steps} is not supported by {spec.name}; use {spec.min_steps} to {spec.max_steps}.",
            "num_steps", "unsupported_value")
    guidance = spec.default_guidance_scale if body.guidance_scale is None else body.guidance_scale
    if not 0.0 <= guidance <= spec.max_guidance_scale:
        raise bad_request(f"guidance_scale must be between 0 and {spec.max_guidance_scale}.", "guidance_scale")
    if body.seed is not None and not 0 <= body.seed <= MAX_SEED:
        raise bad_request(f"seed must be between 0 and {MAX_SEED} (2^32 - 1).", "seed")
    return VideoParams(
        prompt=body.prompt,
        model=spec.name,
        seconds=seconds,
        size=size,
        negative_prompt=body.negative_prompt,
        seed=secrets.randbelow(MAX_SEED + 1) if body.seed is None else body.seed,
        fps=fps,
        num_steps=steps,
        guidance_scale=guidance,
        webhook_url=body.webhook_url,
        metadata=body.metadata or {},
        priority=body.priority,
    )


def _from_pydantic(exc: ValidationError) -> APIError:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if first["type"] == "extra_forbidden":
        return bad_request(
            f"Unrecognized request argument supplied: '{param}'. reelforge accepts: "
            f"{', '.join(CreateVideoBody.model_fields)}.", param, "unknown_parameter")
    return bad_request(f"Invalid value for '{param}': {first['msg']}.", param)


def request_hash(body: CreateVideoBody) -> str:
    """Hash of the request as sent, for Idempotency-Key comparison: the same request gives the same
    hash whether it came as JSON or multipart."""
    canonical = json.dumps(body.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_create(raw: dict[str, Any], webhook_policy: TargetPolicy = PRODUCTION_WEBHOOKS
                 ) -> tuple[VideoParams, CreateVideoBody]:
    """Validate a create request. Returns the resolved parameters and the request as sent."""
    try:
        body = CreateVideoBody.model_validate(raw)
    except ValidationError as exc:
        raise _from_pydantic(exc) from None
    _check_text(body.prompt, "prompt", required=True)
    if body.negative_prompt is not None:
        _check_text(body.negative_prompt, "negative_prompt", required=False)
    spec = MODELS.get(body.model)
    if spec is None:
        raise bad_request(f"The model '{body.model}' does not exist; available: {_choices(tuple(MODELS))}.",
                          "model", "model_not_found")
    if body.metadata is not None:
        _check_metadata(body.metadata)
    if body.webhook_url is not None:
        check_webhook_url(body.webhook_url, webhook_policy)
    return _resolve(body, spec), body


def json_to_dict(raw: bytes) -> dict[str, Any]:
    """A JSON request body -> the request object; every way the bytes can be wrong is a 400."""
    try:
        # Strict UTF-8 (RFC 8259), decoded here: json.loads on bytes would also take UTF-16/32 and let
        # encoded surrogates through (it decodes with surrogatepass).
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("Request body is not valid UTF-8; send JSON encoded as UTF-8.", code="invalid_json") from None
    return _json_object(text, "Request body", None)


def _json_object(text: str, what: str, param: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(f"{what} is not valid JSON ({exc}); send a JSON object.", param, "invalid_json") from None
    except RecursionError:
        raise bad_request(f"{what} nests arrays or objects too deeply; send a flat JSON object.", param,
                          "invalid_json") from None
    except ValueError:  # an integer literal longer than Python converts (4300 digits)
        raise bad_request(f"{what} holds a number with too many digits; seeds are at most 10 digits.", param,
                          "invalid_json") from None
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object.", param, "invalid_json")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise bad_request(f"{what} contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); "
                              "send valid Unicode text.", param, "invalid_json") from None
    return value


def form_to_dict(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Multipart fields -> the JSON shape. metadata may come as JSON text or as metadata[key] fields
    (how SDKs flatten nested objects in forms)."""
    raw: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key, value in items:
        if not isinstance(value, str):
            raise bad_request(f"'{key}' must be a text field; file uploads are not supported.", key)
        if key.startswith("metadata[") and key.endswith("]"):
            metadata[key[len("metadata["):-1]] = value
        elif key in raw:
            raise bad_request(f"'{key}' was sent more than once.", key)
        elif key == "metadata":
            raw[key] = _json_object(value, "'metadata'", "metadata")
        else:
            raw[key] = value
    if metadata:
        raw["metadata"] = {**raw.get("metadata", {}), **metadata}
    return raw
