"""``kind = "http"``: request a list of URLs and the pages of a sitemap (SPEC §16).

A run selects its URLs (the configured ``urls``, then the sitemap's pages, deduplicated, at most
``limit``) and requests each one as an item of the sliding window. Every request — sitemap fetches
too — passes the run's :class:`~warmupd.jobs.kinds.hosts.HostGate` (per-host places, rate,
``Retry-After`` pauses). Bodies are streamed and discarded, only their bytes counted; the run's
metadata gets the latency summary. Header values from ``headers_env`` are registered as secrets
(never logged) and scrubbed from every error message.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections import Counter
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from warmupd import __version__
from warmupd.clock import Clock
from warmupd.config_kinds import HttpKind
from warmupd.errors import JobError
from warmupd.jobs.base import Fencing, ItemOutcome, Job, RunSettings
from warmupd.jobs.kinds.hosts import HostGate
from warmupd.jobs.kinds.sitemap import (
    CHUNK_BYTES,
    MAX_BYTES,
    MAX_DEPTH,
    Sitemap,
    SitemapError,
    SitemapParser,
    gunzip_chunks,
    is_gzip,
)
from warmupd.logs import register_secret

MAX_REDIRECTS = 5
# aiohttp raises on the redirect that reaches its max_redirects, so following 5 needs 6.
_CLIENT_MAX_REDIRECTS = MAX_REDIRECTS + 1
MAX_ATTEMPTS = 3
"""A URL answered 429/503 with ``Retry-After`` is asked again after the pause, this many times in all."""


@dataclass(frozen=True)
class Target:
    """One URL of a run; ``skip`` says why it is not requested (another host, not http)."""

    url: str
    skip: str | None = None


def host_of(url: str) -> str:
    """The URL's host name in lower case ('' when it has none)."""
    return (urlsplit(url).hostname or "").lower()


def retry_after_s(value: str | None, now_ms: int) -> float | None:
    """``Retry-After`` (delay-seconds or an HTTP date) → seconds from now; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_ms / 1000)


def _percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_ms)))
    return round(sorted_ms[rank - 1], 1)


class HttpJob(Job[Target]):
    """A user-defined job that warms URLs."""

    def __init__(self, name: str, *, clock: Clock, sitemap_max_bytes: int = MAX_BYTES) -> None:
        self.name = name
        self.lock_key = f"job:{name}:lock"
        self.clock = clock
        self.sitemap_max_bytes = sitemap_max_bytes
        self.gate = HostGate(clock, per_host_concurrency=None, rate_per_s=None)
        self._session: aiohttp.ClientSession | None = None
        self._spec = HttpKind(urls=())
        self._headers: dict[str, str] = {}
        self._secrets: list[str] = []
        self._timeout_s = 30.0
        self.start_run()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # Bodies are discarded, so they are never inflated; a sitemap is inflated by
                # gunzip_chunks under its size cap, not by the client.
                auto_decompress=False,
                # The window bounds the connections; no cookies carry from one URL to the next.
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    def item_timeout_s(self, settings: RunSettings) -> float | None:
        """None: the job times each request itself; waiting for a host's turn is not the URL's time."""
        return None

    def start_run(self) -> None:
        """Reset the run's tallies."""
        self._latencies: list[tuple[float, str]] = []
        self._statuses: Counter[str] = Counter()
        self._bytes = 0
        self._requested = 0
        self._skipped_sitemaps = 0

    # ----------------------------------------------------------------- selection

    async def select(self, settings: RunSettings, now_ms: int) -> list[Target]:
        """The configured URLs, then the sitemap's pages (deduplicated, at most ``limit``).

        :raises JobError: a ``headers_env`` variable is unset, or a sitemap was refused.
        """
        spec = settings.spec
        assert isinstance(spec, HttpKind)
        self._spec = spec
        self._timeout_s = settings.item_timeout_ms / 1000
        self._headers = {"User-Agent": f"warmupd/{__version__}", **spec.headers}
        self._secrets = []
        for header, variable in spec.headers_env.items():
            value = os.environ.get(variable, "")
            if not value:
                raise JobError(f"headers_env.{header}: environment variable {variable} is not set")
            register_secret(value)
            self._secrets.append(value)
            self._headers[header] = value
        self.gate = HostGate(
            self.clock, per_host_concurrency=spec.per_host_concurrency, rate_per_s=spec.rate_per_s
        )
        targets = {url: Target(url) for url in spec.urls}
        if spec.sitemap:
            for page in await self._sitemap_pages(spec.sitemap):
                targets.setdefault(page.url, page)
        return list(targets.values())[: settings.limit]

    def _allowed(self, url: str, own_host: str) -> str | None:
        """Why a URL from a sitemap is not requested, or None when it may be."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "not_http_url"
        host = parts.hostname.lower()
        if host != own_host and host not in self._spec.allow_hosts:
            return "host_not_allowed"
        return None

    async def _sitemap_pages(self, root: str) -> list[Target]:
        own_host = host_of(root)
        pages: list[Target] = []
        fetched = {root}
        queue: list[tuple[str, tuple[str, ...]]] = [(root, ())]
        while queue:
            url, ancestors = queue.pop(0)
            sitemap = await self._fetch_sitemap(url)
            if sitemap.kind == "urlset":
                pages += [Target(loc, self._allowed(loc, own_host)) for loc in sitemap.locs]
                continue
            chain = (*ancestors, url)
            for child in sitemap.locs:
                if child in chain:
                    raise SitemapError(f"sitemap index {url} refers back to {child}")
                if len(chain) >= MAX_DEPTH:
                    raise SitemapError(
                        f"sitemap index {url} nests deeper than {MAX_DEPTH} levels ({child})"
                    )
                if self._allowed(child, own_host) is not None:
                    # A sitemap cannot send warmupd to crawl someone else's site.
                    self._skipped_sitemaps += 1
                elif child not in fetched:
                    fetched.add(child)
                    queue.append((child, chain))
        return pages

    async def _fetch_sitemap(self, url: str) -> Sitemap:
        try:
            async with self.gate.slot(host_of(url)), asyncio.timeout(self._timeout_s):
                data = await self._download(url)
            parser = SitemapParser()
            if is_gzip(data):
                pieces: Any = gunzip_chunks(data, max_bytes=self.sitemap_max_bytes)
            else:
                pieces = (data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES))
            for piece in pieces:
                parser.feed(piece)
                # Inflating and parsing 50 MB must not hold the loop: one piece per turn.
                await asyncio.sleep(0)
            return parser.close()
        except SitemapError as exc:
            raise SitemapError(f"sitemap {url}: {self._scrub(exc.message)}") from None
        except TimeoutError:
            raise SitemapError(f"sitemap {url}: timed out after {self._timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise SitemapError(f"sitemap {url}: {self._describe(exc)}") from None

    async def _download(self, url: str) -> bytes:
        headers = {**self._headers, "Accept-Encoding": "gzip"}
        async with self._client().get(
            url, headers=headers, max_redirects=_CLIENT_MAX_REDIRECTS
        ) as resp:
            if resp.status != 200:
                raise SitemapError(f"HTTP {resp.status}")
            data = bytearray()
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                data += chunk
                if len(data) > self.sitemap_max_bytes:
                    raise SitemapError(f"larger than {self.sitemap_max_bytes} bytes")
        return bytes(data)

    # ----------------------------------------------------------------- requests

    async def process(self, item: Target, fencing: Fencing, now_ms: int) -> ItemOutcome:
        """Request one URL; 429/503 with ``Retry-After`` pause its host and ask again.

        :raises JobError: ``"<status or error>"`` when the answer is not one ``expect`` lists.
        """
        if item.skip:
            return ItemOutcome.skipped(item.skip)
        host = host_of(item.url)
        self._requested += 1
        for attempt in range(1, MAX_ATTEMPTS + 1):
            async with self.gate.slot(host):
                status, retry_s = await self._request(item.url)
            if status in (429, 503) and retry_s is not None and attempt < MAX_ATTEMPTS:
                self.gate.pause(host, retry_s)
                continue
            break
        if self._spec.expected(status):
            return ItemOutcome.processed()
        raise JobError(f"HTTP {status}")

    async def _request(self, url: str) -> tuple[int, float | None]:
        started = self.clock.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client().request(
                    self._spec.method,
                    url,
                    headers=self._headers,
                    max_redirects=_CLIENT_MAX_REDIRECTS,
                ) as resp:
                    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                        self._bytes += len(chunk)
                    status = resp.status
                    retry_s = retry_after_s(resp.headers.get("Retry-After"), self.clock.wall_ms())
        except TimeoutError:
            raise JobError(f"timed out after {self._timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise JobError(self._describe(exc)) from None
        self._latencies.append(((self.clock.monotonic() - started) * 1000, url))
        self._statuses[str(status)] += 1
        return status, retry_s

    def _describe(self, exc: aiohttp.ClientError) -> str:
        if isinstance(exc, aiohttp.TooManyRedirects):
            return f"too many redirects (more than {MAX_REDIRECTS})"
        if isinstance(exc, aiohttp.ClientConnectorError):
            err = exc.os_error
            # asyncio's strerror is "Connect call failed (…)"; the errno says what happened.
            return f"cannot connect: {os.strerror(err.errno) if err.errno else err}"
        return self._scrub(f"{type(exc).__name__}: {exc}")

    def _scrub(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    def label(self, item: Target) -> str:
        """The URL."""
        return item.url

    def summary(self) -> dict[str, Any]:
        """``{urls, bytes, p50Ms, p95Ms, maxMs, slowest, statuses}`` (SPEC §16)."""
        ms = sorted(m for m, _ in self._latencies)
        slowest = sorted(self._latencies, key=lambda pair: -pair[0])[:5]
        out: dict[str, Any] = {
            "urls": self._requested,
            "bytes": self._bytes,
            "p50Ms": _percentile(ms, 0.5) if ms else None,
            "p95Ms": _percentile(ms, 0.95) if ms else None,
            "maxMs": round(ms[-1], 1) if ms else None,
            "slowest": [{"url": url, "ms": round(m, 1)} for m, url in slowest],
            "statuses": dict(sorted(self._statuses.items())),
        }
        if self._skipped_sitemaps:
            out["skippedSitemaps"] = self._skipped_sitemaps
        return out
