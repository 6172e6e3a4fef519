"""The HTTP edge's per-request savings (bench P3/P7) change nothing a client can see.

Warmup bodies that passed validation are remembered by their bytes and Content-Type, and encoded
warmup answers by their contents; both memos are bounded, and every check that is not a pure
function of those keys (secret, size limit, the service's answer) still runs on every request.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.http_fakes import JOB_SECRET, WARMUP_SECRET, FakeServices
from warmupd import http, render
from warmupd.http import create_app

JSON = "application/json"
SLUG = "iphone-vs-android"


def _headers(secret: str = WARMUP_SECRET, ctype: str = JSON) -> dict[str, str]:
    return {"Content-Type": ctype, "X-Warmup-Secret": secret}


@pytest.fixture(autouse=True)
def empty_memos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_WARMUP_BODIES", render.Memo(4))
    monkeypatch.setattr(render, "_ANSWERS", render.Memo(4))


def test_memo_is_bounded_oldest_out_first() -> None:
    memo: render.Memo[str, int] = render.Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("a", 10)  # a known key: replaced, nothing dropped
    assert (len(memo), memo.get("a"), memo.get("b")) == (2, 10, 2)
    memo.put("c", 3)
    assert (len(memo), memo.get("a"), memo.get("b"), memo.get("c")) == (2, None, 2, 3)
    with pytest.raises(ValueError, match="at least one"):
        render.Memo(0)


def test_encoded_answers_are_the_json_of_the_answer() -> None:
    ready = {"slug": SLUG, "dataHash": "0" * 16, "status": "ready", "statusUrl": "/x"}
    code, body = render.warmup_answer_bytes(ready)
    assert (code, json.loads(body)) == (200, ready)
    assert render.warmup_answer_bytes(dict(ready)) is render.warmup_answer_bytes(ready)
    queued = {**ready, "status": "queued"}
    code, body = render.warmup_answer_bytes(queued)
    assert code == 202
    assert json.loads(body) == {**queued, "statusUrl": f"/api/comparison/{SLUG}/status"}
    # Not only strings: never kept, as True == 1 would make two answers one key.
    for value in (True, 1):
        odd = {"slug": SLUG, "extra": value}
        assert json.loads(render.warmup_answer_bytes(odd)[1])["extra"] == value
    assert len(render._ANSWERS) == 2


async def test_a_remembered_body_still_passes_every_other_check(aiohttp_client: Any) -> None:
    fakes = FakeServices()
    limit = {"bytes": 1000}
    app = create_app(fakes.status, **fakes.app_kwargs(), max_body_bytes=lambda: limit["bytes"])
    client = await aiohttp_client(app)
    body = json.dumps({"slug": SLUG}).encode()
    for _ in range(2):
        resp = await client.post("/api/comparison/warmup", data=body, headers=_headers())
        assert (resp.status, (await resp.json())["status"]) == (202, "queued")
    assert len(http._WARMUP_BODIES) == 1
    assert fakes.recorder.writes == [("request_warmup", (SLUG, None))] * 2  # asked every time
    # The same bytes: the secret, the media type and the (reloaded) size limit are checked anew.
    resp = await client.post("/api/comparison/warmup", data=body, headers=_headers("wrong"))
    assert (resp.status, (await resp.json())["error"]) == (401, "unauthorized")
    resp = await client.post(
        "/api/comparison/warmup", data=body, headers=_headers(JOB_SECRET, "text/plain")
    )
    assert (resp.status, (await resp.json())["error"]) == (415, "unsupported_media_type")
    limit["bytes"] = 10
    resp = await client.post("/api/comparison/warmup", data=body, headers=_headers())
    assert (resp.status, (await resp.json())["error"]) == (413, "payload_too_large")
    limit["bytes"] = 1000
    # The service's answer is never remembered: a slug that became ready says so.
    fakes.comparisons.ready_slugs.add(SLUG)
    resp = await client.post("/api/comparison/warmup", data=body, headers=_headers())
    assert (resp.status, (await resp.json())["status"]) == (200, "ready")


async def test_refused_bodies_are_never_remembered(aiohttp_client: Any) -> None:
    fakes = FakeServices()
    client = await aiohttp_client(create_app(fakes.status, **fakes.app_kwargs()))
    for body in (b'{"slug": "a", "slug": "b"}', b'{"slug": "\\ud800"}', b'{"slug": "NO"}'):
        for _ in range(2):
            resp = await client.post("/api/comparison/warmup", data=body, headers=_headers())
            assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")
    assert len(http._WARMUP_BODIES) == 0
    long = json.dumps({"slug": SLUG, "dataHash": None, "pad": None}).replace("null", " " * 300)
    resp = await client.post("/api/comparison/warmup", data=long.encode(), headers=_headers())
    assert resp.status == 400  # unknown field "pad": refused, and too long to keep anyway
    assert len(http._WARMUP_BODIES) == 0


async def test_bodies_memo_is_bounded(aiohttp_client: Any) -> None:
    fakes = FakeServices()
    client = await aiohttp_client(create_app(fakes.status, **fakes.app_kwargs()))
    for spaces in range(6):
        body = ("{" + " " * spaces + f'"slug": "{SLUG}"}}').encode()
        resp = await client.post("/api/comparison/warmup", data=body, headers=_headers())
        assert resp.status == 202
    assert len(http._WARMUP_BODIES) == 4


async def test_unmatched_requests_are_counted_once(aiohttp_client: Any) -> None:
    fakes = FakeServices()
    app = create_app(fakes.status, **fakes.app_kwargs())
    client = await aiohttp_client(app)
    for method, path in (("GET", "/nope"), ("DELETE", "/api/jobs/housekeeping"), ("HEAD", "/")):
        resp = await client.request(method, path)
        assert resp.status in (404, 405)
        assert len(resp.headers["X-Request-Id"]) == 16
    text = await (await client.get("/metrics")).text()
    assert 'warmupd_http_requests_total{route="unmatched",code="404"} 2' in text
    assert 'warmupd_http_requests_total{route="unmatched",code="405"} 1' in text
    assert not app.middlewares  # the edge wraps each route instead
