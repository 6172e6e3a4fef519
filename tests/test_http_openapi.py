"""The OpenAPI document is valid 3.1 and the real responses conform to it (schemathesis)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.http_fakes import JOB_SECRET, FakeServices
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


class ThreadServer:
    """The app with fakes on a loopback port, served from its own thread and event loop.

    schemathesis calls the server synchronously, so the server cannot share the test's loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        fakes = FakeServices()
        app = create_app(fakes.status, **fakes.app_kwargs(), max_body_bytes=1_048_576)
        self.runner = web.AppRunner(app, handle_signals=False)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def __enter__(self) -> str:
        self.thread.start()
        self.ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


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
