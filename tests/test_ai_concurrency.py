"""SPEC §17: a run's concurrency is the number of model calls in flight; ``ai.max_in_flight`` caps it.

The real ``warmup-ai-explanations`` job (the real runner, SQLite locks and run records on a real file,
the OpenAI-compatible client built by the daemon's own wiring) runs against a loopback fake model
server that counts the requests in flight. The server holds every request until as many are in
flight as the run's concurrency, so the peak is reached deterministically, however slowly the
machine runs; only when that can never happen (a cap below the concurrency) a held wave is let go
after a bound, and the assertion is still on counts, never on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes import FakeClock
from warmupd.cli import main
from warmupd.config import JOB_INSIGHTS, parse_config
from warmupd.config_checks import warnings_for
from warmupd.errors import ConfigError
from warmupd.importer import load_demo_data
from warmupd.jobs.insights import InsightsJob
from warmupd.jobs.parts import Warmer
from warmupd.jobs.runner import JobRunner
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import RunStatus, Trigger
from warmupd.state.cache import CacheStore
from warmupd.state.runs import RunStore
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore
from warmupd.wiring import make_insights

NOW = 1_767_225_600_000
CAPPED_HOLD_S = 0.5
"""How long a wave that can never reach the run's concurrency is held (a cap below it)."""

REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "fake",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": json.dumps(
                    {
                        "meaningExplanation": {
                            "summary": "One term draws more search interest than the other.",
                            "keyDifferences": ["They differ in level."],
                        },
                        "peakExplanations": [],
                    }
                ),
            },
            "finish_reason": "stop",
        }
    ],
}


class GatedModel:
    """A Chat Completions server that holds requests until ``target`` are in flight at once."""

    def __init__(self, target: int, hold_s: float) -> None:
        self.target = target
        self.hold_s = hold_s
        self.in_flight = 0
        self.peak = 0
        self.requests = 0
        self._gate = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        gate = self._gate
        if self.in_flight >= self.target:
            # Release this wave; later requests wait at a new gate.
            gate.set()
            self._gate = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hold_s):
                    await gate.wait()
        finally:
            self.in_flight -= 1
        return web.json_response(REPLY)


class InlinePool:
    """Runs the facts step on the loop: the pool is not what this test is about."""

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def start(self) -> None:
        pass


@contextlib.asynccontextmanager
async def model_server(model: GatedModel) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", model.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/v1"))
    finally:
        await server.close()


async def run_ai_job(
    tmp_path: Path,
    model: GatedModel,
    *,
    items: int,
    trigger_concurrency: int | None,
    ai: dict[str, Any],
) -> tuple[RunStatus, int]:
    """One run of the real insights job against ``model``; ``(status, processed)``."""
    async with model_server(model) as url:
        cfg = parse_config(
            {"ai": {"provider": "openai", "base_url": url, "model": "fake", **ai}}, env={}
        )
        clock = FakeClock(NOW)
        async with SqliteDatabase(tmp_path / "state.db") as db:
            await load_demo_data(db, count=items + 4, seed=11, now_ms=NOW)
            insights = make_insights(cfg, InlinePool())  # type: ignore[arg-type]
            try:
                warmer = Warmer(
                    cache=CacheStore(db),
                    cpu=InlinePool(),
                    insights=insights,
                    cache_config=cfg.cache,
                    forecast_config=cfg.forecast,
                    clock=clock,
                )
                job = InsightsJob(ComparisonStore(db), warmer)
                runner = JobRunner(
                    jobs={job.name: job},
                    config=lambda: cfg,
                    locks=SqliteLocks(db, clock, "test:1:aaaaaa"),
                    runs=RunStore(db),
                    clock=clock,
                    node="test:1:aaaaaa",
                )
                handle = await runner.trigger(
                    JOB_INSIGHTS, Trigger.CLI, limit=items, concurrency=trigger_concurrency
                )
                record = await handle.wait()
            finally:
                await insights.close()
    return record.status, record.processed


@pytest.mark.parametrize(
    ("concurrency", "trigger_concurrency"),
    [(3, None), (5, 5)],
    ids=["job-concurrency-3", "trigger-concurrency-5"],
)
async def test_a_run_has_as_many_model_calls_in_flight_as_its_concurrency(
    tmp_path: Path, concurrency: int, trigger_concurrency: int | None
) -> None:
    # The seed's job concurrency is 3; a trigger may ask for 5. No hidden cap may lower either.
    assert parse_config({}, env={}).jobs[JOB_INSIGHTS].concurrency == 3
    items = 2 * concurrency
    model = GatedModel(target=concurrency, hold_s=10.0)
    status, processed = await run_ai_job(
        tmp_path, model, items=items, trigger_concurrency=trigger_concurrency, ai={}
    )
    assert (status, processed) == (RunStatus.SUCCESS, items)
    assert model.requests == items
    assert model.peak == concurrency


@pytest.mark.parametrize(
    ("concurrency", "trigger_concurrency"),
    [(3, None), (5, 5)],
    ids=["job-concurrency-3", "trigger-concurrency-5"],
)
async def test_ai_max_in_flight_caps_every_run(
    tmp_path: Path, concurrency: int, trigger_concurrency: int | None
) -> None:
    # The server would hold the calls until `concurrency` were in flight; the cap never lets them.
    model = GatedModel(target=concurrency, hold_s=CAPPED_HOLD_S)
    status, processed = await run_ai_job(
        tmp_path,
        model,
        items=concurrency,
        trigger_concurrency=trigger_concurrency,
        ai={"max_in_flight": 2},
    )
    assert (status, processed) == (RunStatus.SUCCESS, concurrency)
    assert model.peak == 2


def test_check_config_warns_when_max_in_flight_is_below_a_concurrency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[ai]\nmax_in_flight = 2\n\n[on_demand]\nconcurrency = 2\n", encoding="utf-8")
    assert main(["check-config", "-c", str(path)]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: ai.max_in_flight = 2 is below jobs.warmup-ai-explanations.concurrency = 3" in err
    )
    assert "on_demand.concurrency" not in err  # 2 is not below 2
    assert main(["check-config", "-c", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["warnings"]) == 1


def test_no_warning_without_a_cap_or_with_a_cap_at_every_concurrency() -> None:
    assert warnings_for(parse_config({}, env={})) == []
    cfg = parse_config(
        {"ai": {"max_in_flight": 5}, "jobs": {JOB_INSIGHTS: {"concurrency": 5}}}, env={}
    )
    assert warnings_for(cfg) == []
    cfg = parse_config({"ai": {"max_in_flight": 4}, "on_demand": {"concurrency": 8}}, env={})
    assert [w.split(" is below ")[1].split(" =")[0] for w in warnings_for(cfg)] == [
        "on_demand.concurrency"
    ]


def test_the_old_ai_concurrency_key_is_an_error_that_names_max_in_flight() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"ai": {"concurrency": 2}}, env={})
    assert caught.value.path == "ai.concurrency"
    assert "ai.max_in_flight" in str(caught.value)


def test_ai_max_in_flight_is_validated() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"ai": {"max_in_flight": 0}}, env={})
    assert caught.value.path == "ai.max_in_flight"
