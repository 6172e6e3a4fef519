"""The strict reference for P3 and P7 (SPEC §17): the fastest aiohttp handlers for the same answers.

Run: ``python -m bench.bare_app --port P [--packs FILE] [--warmup FILE]``. Same ``AppRunner``/``TCPSite``
setup as the daemon (no access log), no middlewares, no auth, no storage, and no per-request JSON
encoding: every answer is bytes encoded once at start-up.

* ``GET /healthz`` → ``{"status": "ok"}``;
* ``POST /api/comparison/warmup`` → reads the POST body (as any handler must), then answers ``200``
  with the bytes of ``--warmup`` (a file holding the daemon's own ``ready`` answer, byte for byte);
* ``GET /api/comparison/{slug}`` → the bytes of the daemon's own pack for that slug, from ``--packs``
  (a JSON object ``{slug: the pack's body as text}``), looked up in a dict.
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

JSON = "application/json"


def encode(doc: Any) -> bytes:
    """The bytes a daemon answer had (``json.dumps`` defaults, as ``web.json_response``)."""
    return json.dumps(doc).encode()


def make_app(packs: dict[str, bytes], warmup: bytes) -> web.Application:
    """The three handlers around answers encoded once."""
    ok = encode({"status": "ok"})
    missing = encode({"error": "not_found", "message": "unknown comparison"})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=ok, content_type=JSON)

    async def request_warmup(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=warmup, content_type=JSON)

    async def get_pack(request: web.Request) -> web.Response:
        body = packs.get(request.match_info["slug"])
        if body is None:
            return web.Response(body=missing, status=404, content_type=JSON)
        return web.Response(body=body, content_type=JSON)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/comparison/warmup", request_warmup)
    app.router.add_get("/api/comparison/{slug}", get_pack)
    return app


async def serve(port: int, packs: dict[str, bytes], warmup: bytes) -> None:
    """Serve until SIGTERM/SIGINT."""
    runner = web.AppRunner(make_app(packs, warmup), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.bare_app --port P [--packs FILE] [--warmup FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--packs", type=Path, default=None, help="{slug: body text} GET serves")
    parser.add_argument("--warmup", type=Path, default=None, help="the warmup POST's answer")
    args = parser.parse_args(argv)
    packs: dict[str, bytes] = {}
    if args.packs:
        # The daemon's answers byte for byte (kept as text, not decoded and encoded again).
        texts = json.loads(args.packs.read_text(encoding="utf-8"))
        packs = {slug: text.encode() for slug, text in texts.items()}
    warmup = args.warmup.read_bytes() if args.warmup else encode({"status": "ready"})
    asyncio.run(serve(args.port, packs, warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
