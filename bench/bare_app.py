"""The bare reference for P3 and P7: a tiny aiohttp app with the daemon's paths and nothing else.

Run: ``python -m bench.bare_app --port P [--pack FILE]``. Same ``AppRunner``/``TCPSite`` setup as the
daemon (no access log), no middlewares, no auth, no storage:

* ``GET /healthz`` → ``{"status": "ok"}``;
* ``POST /api/comparison/warmup`` → decodes the JSON body and answers ``200`` with a body shaped
  like the daemon's ``ready`` answer;
* ``GET /api/comparison/{slug}`` → ``web.json_response`` of the document in ``--pack`` (the daemon's
  own premium pack, so both sides serialise the same JSON per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web


def make_app(pack: dict[str, Any]) -> web.Application:
    """The three handlers around ``pack``."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def warmup(request: web.Request) -> web.Response:
        body = await request.json()
        slug = str(body["slug"])
        return web.json_response(
            {
                "slug": slug,
                "dataHash": body.get("dataHash") or "0000000000000000",
                "status": "ready",
                "statusUrl": f"/api/comparison/{slug}/status",
            }
        )

    async def get_pack(request: web.Request) -> web.Response:
        return web.json_response({**pack, "slug": request.match_info["slug"]})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/comparison/warmup", warmup)
    app.router.add_get("/api/comparison/{slug}", get_pack)
    return app


async def serve(port: int, pack: dict[str, Any]) -> None:
    """Serve until SIGTERM/SIGINT."""
    runner = web.AppRunner(make_app(pack), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.bare_app --port P [--pack FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pack", type=Path, default=None, help="JSON document GET serves")
    args = parser.parse_args(argv)
    pack = json.loads(args.pack.read_text(encoding="utf-8")) if args.pack else {"status": "ok"}
    asyncio.run(serve(args.port, pack))
    return 0


if __name__ == "__main__":
    sys.exit(main())
