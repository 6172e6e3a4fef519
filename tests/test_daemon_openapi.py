"""The real daemon's responses conform to its OpenAPI document (schemathesis, real services)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.daemon_support import JOB_SECRET, DaemonProcess, load_demo
from warmupd.openapi import openapi_document

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("openapi")
    daemon = DaemonProcess(root, "real")
    load_demo(daemon, 8)
    daemon.start()
    try:
        # Warm part of the cache so that packs, statuses and run records have real content.
        daemon.trigger("warmup-forecasts", wait=True)
        daemon.trigger("housekeeping", wait=True)
        yield daemon.url
    finally:
        daemon.stop()


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_real_responses_conform(case: schemathesis.Case, daemon_url: str) -> None:
    headers = {"X-Job-Secret": JOB_SECRET}
    # As in test_http_openapi: a schema-valid comparison body may still break a rule JSON Schema
    # cannot state (point keys are the terms, dates ascend); the 400 must then name the series.
    excluded = (
        [positive_data_acceptance] if case.operation.label == "PUT /api/comparisons/{slug}" else []
    )
    response = case.call_and_validate(
        base_url=daemon_url, headers=headers, excluded_checks=excluded
    )
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if excluded and positive and response.status_code == 400:
        assert response.json()["message"].startswith("series["), response.json()
