"""A loopback web site for the http job kind: real aiohttp servers that record every request.

Two hosts are two addresses of the loopback network (127.0.0.1 and 127.0.0.2), so per-host limits
and ``allow_hosts`` are exercised with real connections and no name resolution.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def urlset(urls: list[str]) -> bytes:
    body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="{NS}">{body}</urlset>'.encode()


def sitemapindex(urls: list[str]) -> bytes:
    body = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return f'<?xml version="1.0"?><sitemapindex xmlns="{NS}">{body}</sitemapindex>'.encode()


@dataclass
class Site:
    """One host: fixed routes, a request log, and in-flight counts (shared across hosts)."""

    address: str
    inflight: Counter[str]
    peaks: Counter[str]
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    server: TestServer | None = None
    delay_s: float = 0.0

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://{self.address}:{self.server.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def page(self, path: str, body: bytes = b"ok", status: int = 200, **headers: str) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return web.Response(body=body, status=status, headers=headers)

        self.routes[path] = handler

    def sitemap(self, path: str, doc: bytes, *, gz: bool = False) -> None:
        self.page(path, gzip.compress(doc) if gz else doc, content_type="application/xml")

    def handle(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs, dict(request.headers)))
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="not found")
        self.inflight[self.address] += 1
        self.inflight["all"] += 1
        for key in (self.address, "all"):
            self.peaks[key] = max(self.peaks[key], self.inflight[key])
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)  # latency of the site, not synchronisation
            return await handler(request)
        finally:
            self.inflight[self.address] -= 1
            self.inflight["all"] -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.server = TestServer(app, host=self.address)
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


async def start_sites(*addresses: str) -> list[Site]:
    inflight: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    sites = [Site(address, inflight, peaks) for address in addresses]
    for site in sites:
        await site.start()
    return sites


def kinds_config(name: str, job: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A config dict with one job of a kind."""
    return {"locks": {"lease": "60s"}, "jobs": {name: job}, **sections}
