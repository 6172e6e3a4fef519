"""The OpenAPI document is valid 3.1 and the real responses conform to it (schemathesis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.http_fakes import JOB_SECRET, FakeServices, ThreadServer
from warmupd.http import ROUTES, create_app
from warmupd.openapi import openapi_document


def test_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_route_is_documented_and_nothing_else() -> None:
    doc = openapi_document()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(method, path) for method, path, _, _ in ROUTES}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for code, response in op["responses"].items():
                assert "X-Request-Id" in response["headers"], (path, code)
            assert "500" in op["responses"]


async def test_served_document_is_the_document(aiohttp_client: Any) -> None:
    fakes = FakeServices()
    client = await aiohttp_client(create_app(fakes.status, **fakes.app_kwargs()))
    resp = await client.get("/api/openapi.json")
    assert await resp.json() == openapi_document()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with ThreadServer() as url:
        yield url


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_responses_conform(case: schemathesis.Case, base_url: str) -> None:
    headers = {"X-Job-Secret": JOB_SECRET}
    if case.operation.label != "PUT /api/comparisons/{slug}":
        case.call_and_validate(base_url=base_url, headers=headers)
        return
    # JSON Schema cannot say "the point keys are the two terms" or "dates ascending", so a
    # schema-valid body may still be refused: allowed only with a message about the series.
    response = case.call_and_validate(
        base_url=base_url, headers=headers, excluded_checks=[positive_data_acceptance]
    )
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and response.status_code == 400:
        assert response.json()["message"].startswith("series["), response.json()
