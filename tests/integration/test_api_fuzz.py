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
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from reelforge.devstack.stack import Stack
from tests.integration.conftest import new_tenant_key

pytestmark = pytest.mark.integration

# Examples per operation and generation mode; 8 operations -> a few thousand requests in about a minute.
EXAMPLES = 300
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SENT: list[int] = []  # the status of every request sent, for the closing count


@pytest.fixture(scope="module")
def fuzz_key(gateway_only: Stack) -> str:
    return new_tenant_key(gateway_only, "fuzz")


@pytest.fixture(scope="module")
def api_schema(gateway_only: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{gateway_only.info['gateway_url']}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_request_gets_a_5xx_or_an_undocumented_answer(case: Any, gateway_only: Stack, fuzz_key: str) -> None:
    response = case.call_and_validate(base_url=gateway_only.info["gateway_url"], checks=CHECKS, timeout=30,
                                      headers={"Authorization": f"Bearer {fuzz_key}"})
    SENT.append(response.status_code)


def test_thousands_of_requests_were_sent(gateway_only: Stack) -> None:
    """Runs after the generated tests (pytest keeps file order): the fuzzing was not vacuous."""
    assert len(SENT) >= 2000, len(SENT)
    accepted = sum(1 for status in SENT if status == 200)
    assert accepted > 50, "almost nothing got through validation: the generator is not reaching the handlers"
    assert httpx.get(f"{gateway_only.info['gateway_url']}/readyz", timeout=5).status_code == 200
