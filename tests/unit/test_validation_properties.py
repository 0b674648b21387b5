"""Properties of create-request validation, over generated requests (hypothesis).

1. Any bytes sent as a JSON body, anything JSON can hold, and anything a form can carry, either validates or raises a 4xx APIError that
   names a parameter the client sent or must send: never another exception (which the gateway turns
   into a 500).
2. Every request built from what the model accepts validates, and resolves to exactly those values.
3. The idempotency hash is the same for the JSON and the form spelling of one request.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelforge.core.catalog import REELFORGE_MINI
from reelforge.gateway.errors import APIError
from reelforge.gateway.validation import (
    MAX_METADATA_PAIRS,
    CreateVideoBody,
    form_to_dict,
    json_to_dict,
    parse_create,
    request_hash,
)

FIELDS = list(CreateVideoBody.model_fields)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
# Mostly our own field names (so the checks behind the type checks run), some strangers.
field_names = st.sampled_from(FIELDS) | st.text(max_size=12)
any_json_body = st.dictionaries(field_names, json_values, max_size=8)


def refused_clearly(raw: Any) -> None:
    try:
        parse_create(raw)
    except APIError as error:
        assert 400 <= error.status < 500
        assert error.message and error.code
        if error.param is not None:
            assert error.param in raw or error.param.split(".")[0] in FIELDS


@SETTINGS
@given(any_json_body)
def test_any_json_object_validates_or_is_a_clear_4xx(raw: dict[str, Any]) -> None:
    refused_clearly(raw)


@SETTINGS
@given(any_json_body, st.sampled_from(FIELDS), json_values)
def test_one_wrong_value_among_valid_ones(raw: dict[str, Any], name: str, value: Any) -> None:
    refused_clearly({"prompt": "a red circle", **raw, name: value})


form_items = st.lists(
    st.tuples(field_names | st.builds(lambda k: f"metadata[{k}]", st.text(max_size=8)),
              st.text(max_size=30) | st.sampled_from(['{"a": "b"}', "[1, 2]", '"s"', "null", "{", "1e999"])),
    max_size=10,
)


@SETTINGS
@given(form_items)
def test_any_form_validates_or_is_a_clear_4xx(items: list[tuple[str, str]]) -> None:
    try:
        raw = form_to_dict(items)
    except APIError as error:
        assert 400 <= error.status < 500 and error.message
        return
    refused_clearly(raw)


# Fragments that take a JSON parser down its unusual paths: surrogate escapes (paired and not), raw
# surrogate bytes, numbers too long or too large, NaN, unbalanced nesting.
json_fragments = st.lists(st.sampled_from([
    b"{", b"}", b"[", b"]", b",", b":", b'"prompt"', b'"seed"', b'"metadata"', b'"x"', b'"\\ud800"',
    b'"\\ud83d\\ude00"', b'"\\udfff"', b"\xed\xa0\x80", b"\xff", b"1e999", b"9" * 5000, b"NaN", b"-0",
    b"[" * 3000, b"null", b"true",
]), max_size=12).map(b"".join)


@SETTINGS
@given(json_fragments | st.binary(max_size=100) | st.text(max_size=40).map(lambda t: t.encode("utf-16")))
def test_any_bytes_give_an_object_we_can_store_or_a_clear_400(raw: bytes) -> None:
    try:
        body = json_to_dict(raw)
    except APIError as error:
        assert (error.status, error.code) == (400, "invalid_json") and error.message
        return
    json.dumps(body, ensure_ascii=False).encode()  # what storing the job and answering will do


valid_requests = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=200).filter(lambda p: p.strip() and p.isprintable())},
    optional={
        "size": st.sampled_from(REELFORGE_MINI.sizes),
        "seconds": st.sampled_from(REELFORGE_MINI.seconds) | st.sampled_from([int(s) for s in REELFORGE_MINI.seconds]),
        "fps": st.sampled_from(REELFORGE_MINI.fps),
        "num_steps": st.integers(REELFORGE_MINI.min_steps, REELFORGE_MINI.max_steps),
        "guidance_scale": st.floats(0, REELFORGE_MINI.max_guidance_scale),
        "seed": st.integers(0, 2**32 - 1),
        "priority": st.sampled_from(["interactive", "batch"]),
        "metadata": st.dictionaries(st.text(min_size=1, max_size=64), st.text(max_size=512),
                                    max_size=MAX_METADATA_PAIRS),
    },
)


@SETTINGS
@given(valid_requests)
def test_every_request_within_the_spec_is_accepted_as_sent(raw: dict[str, Any]) -> None:
    params, _ = parse_create(raw)
    for name in ("size", "fps", "num_steps", "seed", "priority", "metadata"):
        if name in raw:
            assert getattr(params, name) == raw[name]
    if "seconds" in raw:
        assert params.seconds == str(raw["seconds"])


@SETTINGS
@given(valid_requests.filter(lambda raw: not isinstance(raw.get("seconds"), int) and raw.get("metadata") != {}))
def test_json_and_form_spellings_hash_alike(raw: dict[str, Any]) -> None:
    """(JSON `"seconds": 4` and form `seconds=4` hash apart, and so do `"metadata": {}` and no metadata:
    the hash is of the request as sent.)"""
    as_form = [(k, str(v)) for k, v in raw.items() if k != "metadata"]
    as_form += [(f"metadata[{k}]", v) for k, v in raw.get("metadata", {}).items()]
    if "guidance_scale" in raw:  # a form carries the float's repr; the model parses it back exactly
        as_form = [(k, repr(raw[k]) if k == "guidance_scale" else v) for k, v in as_form]
    _, from_json = parse_create(raw)
    _, from_form = parse_create(form_to_dict(as_form))
    assert request_hash(from_json) == request_hash(from_form)
