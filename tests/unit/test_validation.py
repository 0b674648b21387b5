"""Create-request validation: every refusal names its parameter and says what is accepted."""

from __future__ import annotations

import pytest

from reelforge.core.catalog import REELFORGE_MINI
from reelforge.gateway.errors import APIError
from reelforge.gateway.validation import form_to_dict, parse_create, request_hash


def refused(raw: dict[str, object]) -> APIError:
    with pytest.raises(APIError) as info:
        parse_create(raw)
    assert 400 <= info.value.status < 500
    return info.value


def test_defaults_come_from_the_model_spec() -> None:
    params, _ = parse_create({"prompt": "a red circle"})
    assert params.model == REELFORGE_MINI.name
    assert params.size == REELFORGE_MINI.default_size
    assert params.seconds == REELFORGE_MINI.default_seconds
    assert params.num_steps == REELFORGE_MINI.default_steps
    assert 0 <= params.seed <= 2**32 - 1


@pytest.mark.parametrize(
    ("raw", "param", "hint"),
    [
        ({"prompt": "   "}, "prompt", "must not be empty"),
        ({"prompt": "x" * 2001}, "prompt", "2000"),
        ({"prompt": "bad\x07bell"}, "prompt", "U+0007"),
        ({"prompt": "ok", "negative_prompt": "a\x00"}, "negative_prompt", "U+0000"),
        ({"prompt": "ok", "size": "720x1280"}, "size", "'64x64'"),
        ({"prompt": "ok", "seconds": "12"}, "seconds", "'2'"),
        ({"prompt": "ok", "fps": 30}, "fps", "'8'"),
        ({"prompt": "ok", "num_steps": 0}, "num_steps", "1 to 50"),
        ({"prompt": "ok", "num_steps": 51}, "num_steps", "1 to 50"),
        ({"prompt": "ok", "seed": -1}, "seed", "2^32 - 1"),
        ({"prompt": "ok", "seed": 2**32}, "seed", "2^32 - 1"),
        ({"prompt": "ok", "seed": "abc"}, "seed", "integer"),
        ({"prompt": "ok", "model": "sora-2"}, "model", "reelforge-mini"),
        ({"prompt": "ok", "guidance_scale": 50}, "guidance_scale", "between 0"),
        ({"prompt": "ok", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "16"),
        ({"prompt": "ok", "metadata": {"k": 1}}, "metadata.k", "string"),
        ({"prompt": "ok", "webhook_url": "ftp://example.com/x"}, "webhook_url", "https://"),
        ({"prompt": "ok", "priority": "urgent"}, "priority", "interactive"),
        ({"prompt": "ok", "colour": "red"}, "colour", "Unrecognized"),
        ({}, "prompt", "Missing required"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(raw: dict[str, object], param: str, hint: str) -> None:
    error = refused(raw)
    assert error.param == param
    assert hint in error.message


def test_newline_and_tab_are_allowed_in_prompts() -> None:
    params, _ = parse_create({"prompt": "line one\n\tline two"})
    assert params.prompt == "line one\n\tline two"


def test_integer_seconds_are_accepted_like_the_sdk_string() -> None:
    assert parse_create({"prompt": "ok", "seconds": 4})[0].seconds == "4"


def test_request_hash_is_the_same_for_json_and_form_and_differs_by_content() -> None:
    from_json = request_hash(parse_create({"prompt": "p", "seed": 7, "metadata": {"a": "b", "c": "d"}})[1])
    from_form = request_hash(parse_create(form_to_dict(
        [("prompt", "p"), ("seed", "7"), ("metadata[c]", "d"), ("metadata[a]", "b")]))[1])
    other = request_hash(parse_create({"prompt": "p", "seed": 8, "metadata": {"a": "b", "c": "d"}})[1])
    assert from_json == from_form
    assert from_json != other


def test_form_rejects_repeated_fields_and_bad_metadata_json() -> None:
    with pytest.raises(APIError, match="more than once"):
        form_to_dict([("prompt", "a"), ("prompt", "b")])
    with pytest.raises(APIError, match="JSON object"):
        form_to_dict([("prompt", "a"), ("metadata", "{not json")])
