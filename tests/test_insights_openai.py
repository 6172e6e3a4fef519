"""The OpenAI-compatible insights client against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from warmupd.errors import ProducerError
from warmupd.models import Comparison
from warmupd.producers import InsightsProducer
from warmupd.producers.insights_builtin import compute_facts
from warmupd.producers.insights_openai import OpenAIInsights
from warmupd.producers.openai_wire import retry_after_s, scrub

NOW = 1_750_000_000_000
A, B = "iphone", "android"
KEY_ENV = "WARMUPD_TEST_INSIGHTS_KEY"
KEY = "sk-test-Zq8vXw3KeyThatMustNeverLeak-4f1c9e"


def comparison() -> Comparison:
    rng = np.random.default_rng(4)
    n = 120
    a = 60 + rng.normal(0, 1.5, n)
    b = 30 + rng.normal(0, 1.5, n)
    a[40] += 35
    b[80] += 30
    d0 = date(2025, 1, 1)
    series = tuple(
        {
            "date": (d0 + timedelta(days=i)).isoformat(),
            A: round(float(np.clip(a[i], 0, 100))),
            B: round(float(np.clip(b[i], 0, 100))),
        }
        for i in range(n)
    )
    return Comparison(slug="iphone-vs-android", term_a=A, term_b=B, timeframe="3m", series=series)


COMP = comparison()
FACTS = compute_facts(COMP)
PEAK_IDS = [p["peakId"] for p in FACTS["peaks"]]


def model_json(winner: str = "termA", peaks: list[str] | None = None) -> dict[str, Any]:
    ids = PEAK_IDS if peaks is None else peaks
    return {
        "meaningExplanation": {
            "summary": f"{A} attracts about twice the search interest of {B}.",
            "keyDifferences": [f"{A} leads on every day.", f"{B} had one short spike."],
            "winner": winner,
        },
        "peakExplanations": [
            {"peakId": pid, "explanation": f"Model text for {pid}."} for pid in ids
        ]
        + [{"peakId": "termA-1999-01-01", "explanation": "An invented peak."}],
    }


def chat(content: Any, finish: str = "stop", refusal: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class FakeLLM:
    """A scripted Chat Completions server; the last reply repeats. Records every request."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.latency_s = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            {
                "path": request.path,
                "headers": dict(request.headers),
                "json": await request.json(),
                "peer": request.transport.get_extra_info("peername") if request.transport else None,
            }
        )
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.hang:
                await self.release.wait()
            elif self.latency_s:
                await asyncio.sleep(self.latency_s)
        finally:
            self.in_flight -= 1
        body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        return web.Response(
            status=reply.status, text=body, content_type="application/json", headers=reply.headers
        )


@pytest.fixture
async def llm() -> AsyncIterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("/v1"))
    finally:
        fake.release.set()
        await server.close()


class Sleeps:
    """Records backoff delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def client_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Callable[..., tuple[OpenAIInsights, Sleeps]]]:
    monkeypatch.setenv(KEY_ENV, KEY)
    made: list[OpenAIInsights] = []

    def make(base_url: str, **kw: Any) -> tuple[OpenAIInsights, Sleeps]:
        sleeps = Sleeps()
        params: dict[str, Any] = {
            "base_url": base_url,
            "model": "test-model",
            "api_key_env": KEY_ENV,
            "timeout_s": 5.0,
            "max_retries": 2,
            "prompt_version": "p1",
            "sleep": sleeps,
        }
        client = OpenAIInsights(**{**params, **kw})
        made.append(client)
        return client, sleeps

    yield make
    for client in made:
        await client.close()


Factory = Callable[..., tuple[OpenAIInsights, Sleeps]]


def longest_list(value: Any) -> int:
    if isinstance(value, dict):
        return max([0, *(longest_list(v) for v in value.values())])
    if isinstance(value, list):
        return max([len(value), *(longest_list(v) for v in value)])
    return 0


async def test_success_sends_the_documented_body_and_merges_model_text(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=chat(json.dumps(model_json())))]
    client, sleeps = client_factory(url)
    producer: InsightsProducer = client
    assert client._session is None  # created lazily, inside the running loop

    pack = await producer.insights(COMP, now_ms=NOW)

    (req,) = fake.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    body = req["json"]
    assert set(body) == {
        "model", "messages", "temperature", "max_tokens", "seed", "stream", "response_format",
    }  # fmt: skip
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.2
    assert body["seed"] == 7
    assert body["stream"] is False
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "JSON" in body["messages"][0]["content"]
    facts = json.loads(body["messages"][1]["content"])
    assert facts["comparison"]["termA"] == A
    assert facts["comparison"]["termB"] == B
    assert [p["peakId"] for p in facts["peaks"]] == PEAK_IDS
    # Only computed facts: no list as long as the series, and only a handful of dates.
    assert longest_list(facts) < 10
    dates_in_prompt = {
        p["date"] for p in COMP.series if p["date"] in body["messages"][1]["content"]
    }
    assert len(dates_in_prompt) <= 2 + len(PEAK_IDS) + 1

    assert sleeps.delays == []
    assert pack["provider"] == "openai"
    assert pack["model"] == "test-model"
    assert pack["promptVersion"] == "p1"
    meaning = pack["meaningExplanation"]
    assert meaning["text"] == f"{A} attracts about twice the search interest of {B}."
    assert meaning["source"] == "model"
    # Two model bullets are topped up to three with ours.
    assert len(meaning["keyDifferences"]) == 3
    assert meaning["keyDifferences"][:2] == [
        f"{A} leads on every day.",
        f"{B} had one short spike.",
    ]
    # Peaks (ids, dates, magnitudes) are the detector's; the unknown model peak is dropped.
    assert [p["peakId"] for p in pack["peakExplanations"]] == PEAK_IDS
    for pk, fact in zip(pack["peakExplanations"], FACTS["peaks"], strict=True):
        assert pk["text"] == f"Model text for {pk['peakId']}."
        assert pk["source"] == "model"
        assert (pk["peakDate"], pk["magnitude"]) == (fact["date"], fact["value"])
    assert pack["aiInsightsHash"]

    # The session is long-lived: a second call reuses the same keep-alive connection.
    session = client._session
    await client.insights(COMP, now_ms=NOW + 1)
    assert client._session is session
    assert fake.requests[1]["peer"] == fake.requests[0]["peer"]
    await client.close()
    assert client._session is None


async def test_missing_peak_text_falls_back_to_builtin(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=chat(json.dumps(model_json(peaks=PEAK_IDS[:1]))))]
    client, _ = client_factory(url)
    pack = await client.insights(COMP, now_ms=NOW)
    sources = [p["source"] for p in pack["peakExplanations"]]
    assert sources == ["model", *["builtin"] * (len(PEAK_IDS) - 1)]
    assert pack["peakExplanations"][1]["text"].startswith(f"{B} hit ")


async def test_wrong_winner_keeps_the_computed_leader(
    llm: tuple[FakeLLM, str], client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=chat(json.dumps(model_json(winner=B))))]
    client, _ = client_factory(url)
    with caplog.at_level(logging.WARNING):
        pack = await client.insights(COMP, now_ms=NOW)
    meaning = pack["meaningExplanation"]
    assert meaning["winner"] == "termA"
    assert meaning["source"] == "builtin"
    assert meaning["text"].startswith(f"{A} draws more search interest than {B}")
    assert "computed leader is termA" in caplog.records[-1].fields["detail"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "2"}, 2.0), ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5)],
)
async def test_429_honours_retry_after_then_succeeds(
    llm: tuple[FakeLLM, str], client_factory: Factory, headers: dict[str, str], expected: float
) -> None:
    fake, url = llm
    error = {"error": {"message": "Rate limit reached", "type": "requests"}}
    fake.replies = [Reply(429, error, headers), Reply(body=chat(json.dumps(model_json())))]
    client, sleeps = client_factory(url)
    pack = await client.insights(COMP, now_ms=NOW)
    assert sleeps.delays == [expected]
    assert len(fake.requests) == 2
    assert pack["meaningExplanation"]["source"] == "model"


async def test_retry_after_beyond_the_cap_fails_and_stops_calls(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(429, {"error": {"message": "quota"}}, {"Retry-After": "3600"})]
    client, sleeps = client_factory(url)
    with pytest.raises(ProducerError, match=r"rate_limited \(retry after 3600 s\)"):
        await client.insights(COMP, now_ms=NOW)
    with pytest.raises(ProducerError, match="stopped"):
        await client.insights(COMP, now_ms=NOW)
    assert len(fake.requests) == 1
    assert sleeps.delays == []


async def test_500s_give_up_after_max_retries_plus_one_attempts(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(500, {"error": {"message": "boom"}})]
    client, sleeps = client_factory(url, max_retries=3)
    with pytest.raises(ProducerError, match=r"after 4 attempts: HTTP 500: boom"):
        await client.insights(COMP, now_ms=NOW)
    assert len(fake.requests) == 4
    # 0.5 s · 2^k with up to 25 % jitter off.
    assert len(sleeps.delays) == 3
    for k, delay in enumerate(sleeps.delays):
        assert 0.75 * 0.5 * 2**k <= delay <= 0.5 * 2**k
    # A 5xx does not open the breaker: the next item tries again.
    fake.replies = [Reply(body=chat(json.dumps(model_json())))]
    await client.insights(COMP, now_ms=NOW)


async def test_backoff_is_capped_at_8_seconds(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(503, "Service Unavailable")]
    client, sleeps = client_factory(url, max_retries=6)
    with pytest.raises(ProducerError, match="after 7 attempts: HTTP 503: Service Unavailable"):
        await client.insights(COMP, now_ms=NOW)
    assert max(sleeps.delays) <= 8.0
    assert sleeps.delays[-1] >= 6.0


async def test_timeout_is_retried_then_fails(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(hang=True)]
    client, sleeps = client_factory(url, timeout_s=0.2, max_retries=1)
    with pytest.raises(ProducerError, match=r"after 2 attempts: timed out after 0.2 s"):
        await client.insights(COMP, now_ms=NOW)
    assert len(fake.requests) == 2
    assert len(sleeps.delays) == 1


async def test_connection_refused_is_retried_then_fails(client_factory: Factory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client, sleeps = client_factory(f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(ProducerError, match="after 3 attempts: connection error"):
        await client.insights(COMP, now_ms=NOW)
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (chat('{"meaningExplanation": {"summ', finish="length"), "truncated model output"),
        (chat(None, refusal="I can't help with that."), "model refused: I can't help with that"),
        (chat("Sure! Here are the insights you asked for."), "no JSON object in the reply"),
        (chat('{"meaningExplanation": {"summary": "x",}}'), "invalid JSON"),
        (chat('{"meaningExplanation": {"summary": ""}}'), "summary must be a non-empty string"),
        (chat(json.dumps({"peakExplanations": []})), "meaningExplanation must be an object"),
        ("<html>Bad gateway</html>", "unexpected response body"),
    ],
    ids=["truncated", "refusal", "prose", "invalid-json", "empty-summary", "schema", "not-json"],
)
async def test_unusable_output_fails_the_item_without_retrying(
    llm: tuple[FakeLLM, str], client_factory: Factory, reply: Any, message: str
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=reply)]
    client, sleeps = client_factory(url)
    with pytest.raises(ProducerError, match=message):
        await client.insights(COMP, now_ms=NOW)
    assert len(fake.requests) == 1
    assert sleeps.delays == []
    assert client.breaker_reason is None


@pytest.mark.parametrize(
    "wrap",
    [
        lambda j: f"```json\n{j}\n```",
        lambda j: f"<think>The user wants {{json}}; plan: {{a}} then {{b}}.</think>\n{j}",
        lambda j: [{"type": "text", "text": f"Here you go:\n```\n{j}\n```\nDone."}],
        lambda j: f"Format {{as asked}} with {{}} braces: {j} (end)",
    ],
    ids=["fenced", "think", "content-parts", "stray-braces"],
)
async def test_wrapped_content_is_parsed(
    llm: tuple[FakeLLM, str], client_factory: Factory, wrap: Callable[[str], Any]
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=chat(wrap(json.dumps(model_json()))))]
    client, _ = client_factory(url)
    pack = await client.insights(COMP, now_ms=NOW)
    assert pack["meaningExplanation"]["text"].startswith(f"{A} attracts")


async def test_400_fails_without_retry_or_breaker(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(400, {"error": {"message": "Unrecognized request argument: seed"}})]
    client, sleeps = client_factory(url)
    with pytest.raises(ProducerError, match=r"rejected the request \(HTTP 400: Unrecognized"):
        await client.insights(COMP, now_ms=NOW)
    with pytest.raises(ProducerError, match="HTTP 400"):
        await client.insights(COMP, now_ms=NOW)
    assert len(fake.requests) == 2
    assert sleeps.delays == []


@pytest.mark.parametrize(("status", "reason"), [(401, "unauthorized"), (404, "model_not_found")])
async def test_auth_and_model_errors_stop_further_calls_until_reset(
    llm: tuple[FakeLLM, str], client_factory: Factory, status: int, reason: str
) -> None:
    fake, url = llm
    fake.replies = [Reply(status, {"error": {"message": "nope"}})]
    client, sleeps = client_factory(url)
    with pytest.raises(ProducerError, match=reason):
        await client.insights(COMP, now_ms=NOW)
    with pytest.raises(ProducerError, match=f"AI calls stopped for this run: {reason}"):
        await client.insights(COMP, now_ms=NOW)
    assert len(fake.requests) == 1  # the second call made no request
    assert sleeps.delays == []
    client.reset_breaker()  # a new run
    fake.replies = [Reply(body=chat(json.dumps(model_json())))]
    await client.insights(COMP, now_ms=NOW)
    assert len(fake.requests) == 2


async def test_no_authorization_header_without_a_key(
    llm: tuple[FakeLLM, str], client_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=chat(json.dumps(model_json())))]
    client, _ = client_factory(url)
    monkeypatch.delenv(KEY_ENV)  # read at request time, not at construction
    await client.insights(COMP, now_ms=NOW)
    assert "Authorization" not in fake.requests[0]["headers"]


async def test_api_key_never_reaches_logs_or_errors(
    llm: tuple[FakeLLM, str], client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = llm
    masked = f"{KEY[:8]}****{KEY[-4:]}"
    fake.replies = [
        Reply(500, {"error": {"message": f"upstream rejected key {KEY}"}}),
        Reply(429, f"slow down, {KEY}", {"Retry-After": "1"}),
        Reply(
            401,
            {"error": {"message": f"Incorrect API key provided: {KEY} (shown as {masked})."}},
        ),
    ]
    client, _ = client_factory(url, max_retries=3)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProducerError) as info:
        await client.insights(COMP, now_ms=NOW)
    with pytest.raises(ProducerError) as again:
        await client.insights(COMP, now_ms=NOW)
    assert fake.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"  # it was sent
    assert len(fake.requests) == 3
    assert "Incorrect API key provided" in str(info.value)
    texts = [
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        *(repr(r.args) for r in caplog.records),
        *(repr(getattr(r, "fields", None)) for r in caplog.records),
    ]
    for exc in (info.value, again.value):
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for text in texts:
        for secret in (KEY, KEY[:12], KEY[-8:], masked):
            assert secret not in text


def test_scrub_and_retry_after_helpers() -> None:
    assert scrub(f"key {KEY} and sk-abc1****wxyz", KEY) == "key [redacted] and [redacted]"
    assert scrub("plain message", "") == "plain message"
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None  # in the past
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({"retry-after-ms": "0", "retry-after": "3"}) == 3.0


async def test_async_context_manager_closes_the_session(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=chat(json.dumps(model_json())))]
    client, _ = client_factory(url)
    async with client:
        await client.insights(COMP, now_ms=NOW)
        session = client._session
        assert session is not None
    assert session.closed


async def test_analysis_runs_through_the_facts_runner(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=chat(json.dumps(model_json())))]
    calls: list[str] = []

    async def runner(fn: Callable[[Comparison], dict[str, Any]], c: Comparison) -> dict[str, Any]:
        calls.append(fn.__name__)
        return await asyncio.to_thread(fn, c)

    client, _ = client_factory(url, facts_runner=runner)
    pack = await client.insights(COMP, now_ms=NOW)
    assert calls == ["analyse"]
    assert [p["peakId"] for p in pack["peakExplanations"]] == PEAK_IDS


async def test_requests_in_flight_are_bounded_by_max_in_flight(
    llm: tuple[FakeLLM, str], client_factory: Factory
) -> None:
    fake, url = llm
    fake.replies = [Reply(body=chat(json.dumps(model_json())))]
    fake.latency_s = 0.03  # long enough for every call to be waiting at once
    client, _ = client_factory(url, max_in_flight=2)
    packs = await asyncio.gather(*(client.insights(COMP, now_ms=NOW) for _ in range(6)))
    assert len(fake.requests) == 6
    assert fake.max_in_flight == 2
    assert len({p["aiInsightsHash"] for p in packs}) == 1
