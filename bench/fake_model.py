"""A loopback OpenAI-compatible model server with scripted, heavy-tailed per-item delays (bench P1).

Run: ``python -m bench.fake_model --port P --delays FILE`` (a JSON list of seconds). Each distinct
prompt (the user message of a chat completion: one comparison's facts) gets the next delay of the
list in order of first arrival, so a run over N items draws exactly the N delays of the list
whatever order its items come in; a repeated prompt keeps its delay. The answer is a valid insights
object for any comparison (no peak texts: the built-in ones are kept).

* ``POST /v1/chat/completions`` → after the prompt's delay, a chat completion;
* ``GET /stats`` → ``{"requests", "peak_in_flight", "assigned", "delays_used_s", "calls"}``
  (``calls``: ``[arrival, delay, answered]`` per request, epoch seconds);
* ``POST /reset`` → forget assignments and counters (the next prompts draw the list from the start);
* ``GET /healthz`` → 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

CONTENT = json.dumps(
    {
        "meaningExplanation": {
            "summary": "One term draws clearly more search interest than the other.",
            "keyDifferences": ["They differ in level.", "Their peaks come at different times."],
        },
        "peakExplanations": [],
    }
)
REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CONTENT},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    }
).encode()


class FakeModel:
    """The server's state: delays by prompt, requests and the peak in flight."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.reset()

    def reset(self) -> None:
        """Forget every assignment and counter."""
        self.assigned: dict[str, float] = {}
        self.requests = 0
        self.in_flight = 0
        self.peak = 0
        self.calls: list[tuple[float, float, float]] = []
        """``(arrival, delay, answered)`` per request, wall-clock epoch seconds."""

    def delay_for(self, prompt: str) -> float:
        """The prompt's delay: the next of the list on its first arrival."""
        delay = self.assigned.get(prompt)
        if delay is None:
            index = len(self.assigned)
            delay = self.delays[index % len(self.delays)]
            self.assigned[prompt] = delay
        return delay

    async def complete(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        prompt = str(body["messages"][-1]["content"])
        delay = self.delay_for(prompt)
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        arrival = time.time()
        try:
            await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
            self.calls.append((arrival, delay, time.time()))
        return web.Response(body=REPLY, content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "peak_in_flight": self.peak,
                "assigned": len(self.assigned),
                "delays_used_s": sorted(self.assigned.values()),
                "calls": self.calls,
            }
        )

    async def reset_handler(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


async def healthz(request: web.Request) -> web.Response:
    """200 once the server listens."""
    return web.json_response({"status": "ok"})


async def serve(port: int, delays: list[float]) -> None:
    """Serve until SIGTERM/SIGINT."""
    model = FakeModel(delays)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", model.complete)
    app.router.add_get("/stats", model.stats)
    app.router.add_post("/reset", model.reset_handler)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.fake_model --port P --delays FILE``."""
    parser = argparse.ArgumentParser(prog="python -m bench.fake_model", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delays", type=Path, required=True, help="JSON list of seconds")
    args = parser.parse_args(argv)
    delays = [float(d) for d in json.loads(args.delays.read_text(encoding="utf-8"))]
    asyncio.run(serve(args.port, delays))
    return 0


if __name__ == "__main__":
    sys.exit(main())
