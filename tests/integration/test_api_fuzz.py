"""schemathesis against the gateway's own OpenAPI schema, on a real gateway process with a valid API key.

Positive and negative requests (wrong types, missing fields, unknown parameters, odd path and query
values) for every operation: no answer may be a 5xx, every status must be one the schema documents and
every body must match the documented shape (the OpenAI error envelope for errors). The stack has no
workers, so the accepted jobs only queue: the GPU worker of the shared stack is not flooded.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from reelforge.devstack.stack import Stack
from tests.integration.conftest import new_tenant_key

pytestmark = pytest.mark.integration

# Examples per operation and generation mode: about 1,800 positive and 900 negative requests (only the
# operations with parameters or a body have a negative form), in about 40 s.
EXAMPLES = 300
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_key(gateway_only: Stack) -> str:
    return new_tenant_key(gateway_only, "fuzz")


def operations(gateway_only: Stack) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{gateway_only.info['gateway_url']}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


# schemathesis' pytest integration (from_fixture) needs pytest < 9; its strategies drive hypothesis here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_request_gets_a_5xx_or_an_undocumented_answer(mode: GenerationMode, gateway_only: Stack,
                                                         fuzz_key: str) -> None:
    base_url = gateway_only.info["gateway_url"]
    sent: list[int] = []
    for operation in operations(gateway_only):

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  phases=[Phase.generate])
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: Any) -> None:
            response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30,
                                              headers={"Authorization": f"Bearer {fuzz_key}"})
            sent.append(response.status_code)

        try:
            call()
        except Unsatisfiable:  # negative mode on an operation with no input to make invalid (/healthz)
            assert mode == GenerationMode.NEGATIVE, operation.label
    assert len(sent) >= (1500 if mode == GenerationMode.POSITIVE else 750), len(sent)
    if mode == GenerationMode.POSITIVE:
        assert sent.count(200) > 50, "almost nothing got through validation: the generator misses the handlers"
    assert httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
