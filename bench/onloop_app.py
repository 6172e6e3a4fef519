"""The P2 reference: the same forecasts computed ON the event loop of a server that also answers /healthz.

Run: ``python -m bench.onloop_app --port P --db STATE.db``. What the daemon would be without its
process pool: one aiohttp app on one loop, whose background task calls
:func:`warmupd.producers.forecast.forecast_term` directly (for both terms of every comparison in the
state file, in the forecasts job's popularity order), yielding to the loop between two forecasts.

* ``GET /healthz`` → ``{"status": "ok"}`` (what the bench's prober times);
* ``POST /start?budget_s=S`` → starts the computation (stops after the budget or when all are done)
  and a loop-lag monitor using warmupd's own :func:`~warmupd.metrics.measure_loop_lag` (0.25 s);
* ``GET /result`` → ``{"done", "forecasts", "lag_s": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from warmupd.clock import SystemClock
from warmupd.config import JOB_FORECASTS, parse_config
from warmupd.metrics import measure_loop_lag
from warmupd.models import Comparison
from warmupd.producers.forecast import forecast_term
from warmupd.state.sqlite import SqliteDatabase
from warmupd.state.store import ComparisonStore

STATE = web.AppKey("state", dict)


async def load(db_path: Path) -> list[Comparison]:
    """Every comparison of the forecasts job's selection, in its order."""
    cfg = parse_config({"jobs": {JOB_FORECASTS: {"limit": 1000}}}, env={})
    job = cfg.jobs[JOB_FORECASTS]
    async with SqliteDatabase(db_path) as db:
        store = ComparisonStore(db)
        now = SystemClock().wall_ms()
        return await store.select_for_forecasts(now_ms=now, window_ms=job.window_ms, limit=1000)


async def compute(state: dict[str, Any], budget_s: float) -> None:
    """The forecasts, one after the other on the loop, with a yield between two."""
    clock = SystemClock()
    stop_at = time.monotonic() + budget_s
    try:
        for comparison in state["comparisons"]:
            for term in (comparison.term_a, comparison.term_b):
                if time.monotonic() >= stop_at:
                    return
                forecast_term(
                    dates=comparison.dates,
                    values=comparison.values(term),
                    term="termA" if term == comparison.term_a else "termB",
                    horizon_days=30,
                    min_points=7,
                    generated_at_ms=clock.wall_ms(),
                    source_updated_ms=None,
                )
                state["forecasts"] += 1
                await asyncio.sleep(0)
    finally:
        state["done"] = True


async def lag_monitor(state: dict[str, Any]) -> None:
    """warmupd's own lag step, every 0.25 s, until the computation ends."""
    clock = SystemClock()
    while not state["done"]:
        state["lag_s"].append(await measure_loop_lag(clock, 0.25))


def make_app(comparisons: list[Comparison]) -> web.Application:
    """The reference app."""
    app = web.Application()
    app[STATE] = {"comparisons": comparisons, "done": False, "forecasts": 0, "lag_s": []}
    tasks: set[asyncio.Task[None]] = set()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(request: web.Request) -> web.Response:
        state = request.app[STATE]
        budget = float(request.query.get("budget_s", "10"))
        for coro in (compute(state, budget), lag_monitor(state)):
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return web.json_response({"started": True, "comparisons": len(comparisons)})

    async def result(request: web.Request) -> web.Response:
        state = request.app[STATE]
        return web.json_response(
            {"done": state["done"], "forecasts": state["forecasts"], "lag_s": state["lag_s"]}
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_post("/start", start)
    app.router.add_get("/result", result)
    return app


async def serve(port: int, db_path: Path) -> None:
    """Load the comparisons, then serve until SIGTERM/SIGINT."""
    comparisons = await load(db_path)
    # Pay statsmodels' import before /healthz answers, as the daemon's workers do at start.
    from warmupd.producers.forecast import warm_up

    warm_up()
    runner = web.AppRunner(make_app(comparisons), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.onloop_app --port P --db STATE.db``."""
    parser = argparse.ArgumentParser(prog="python -m bench.onloop_app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
