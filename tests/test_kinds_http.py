"""kind = "http": sitemaps, limits per host, failures, redirects, pauses, hardening, secrets.

A loopback aiohttp site plays the web site (two hosts: 127.0.0.1 and 127.0.0.2); the job runs on
the real runner with a real SQLite file. Rates and pauses are counted on an injected clock.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes import FakeClock
from tests.site_fakes import Site, kinds_config, sitemapindex, start_sites, urlset
from warmupd.clock import Clock, SystemClock
from warmupd.config import parse_config
from warmupd.jobs.kinds.hosts import HostGate
from warmupd.jobs.kinds.http import HttpJob, retry_after_s
from warmupd.jobs.runner import JobRunner
from warmupd.locks.sqlite import SqliteLocks
from warmupd.logs import configure_logging, reset_logging
from warmupd.models import RunRecord, RunStatus, Trigger
from warmupd.state.runs import RunStore
from warmupd.state.sqlite import SqliteDatabase

SECRET_TOKEN = "Bearer sk-cdn-purge-7f3a9c2e5b1d"


@dataclass
class World:
    site: Site
    other: Site
    db: SqliteDatabase
    tmp: Path

    async def run(
        self, job_table: dict[str, Any], *, clock: Clock | None = None, pump: bool = False
    ) -> tuple[RunRecord, HttpJob]:
        clock = clock or SystemClock()
        cfg = parse_config(
            kinds_config("cdn", {"kind": "http", "schedule": "@daily", **job_table}), env={}
        )
        job = HttpJob("cdn", clock=clock)
        runner = JobRunner(
            jobs={"cdn": job},
            config=lambda: cfg,
            locks=SqliteLocks(self.db, clock, "test:1:aaaaaa"),
            runs=RunStore(self.db),
            clock=clock,
            node="test:1:aaaaaa",
        )
        try:
            handle = await runner.trigger("cdn", Trigger.CLI)
            if pump:
                assert isinstance(clock, FakeClock)
                # Virtual time moves in small steps while the run is not done; what is checked
                # is the order of events on that clock, never how long anything took.
                while not handle.task.done():
                    await clock.advance(0.25)
                    await asyncio.sleep(0.002)
            return await handle.wait(), job
        finally:
            await job.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    site, other = await start_sites("127.0.0.1", "127.0.0.2")
    async with SqliteDatabase(tmp_path / "w.db") as db:
        yield World(site, other, db, tmp_path)
    await site.close()
    await other.close()


async def test_sitemap_index_with_plain_and_gzipped_sitemaps_requests_every_url_once(
    world: World,
) -> None:
    site = world.site
    plain = [site.url(f"/p/{n}") for n in range(7)]
    zipped = [site.url(f"/z/{n}") for n in range(5)]
    for url in plain + zipped:
        site.page(url.removeprefix(site.base), b"x" * 100)
    site.sitemap("/sitemap.xml", sitemapindex([site.url("/a.xml"), site.url("/b.xml.gz")]))
    site.sitemap("/a.xml", urlset(plain))
    site.sitemap("/b.xml.gz", urlset([*zipped, plain[0]]), gz=True)
    record, _ = await world.run({"sitemap": site.url("/sitemap.xml"), "urls": [plain[1]]})
    assert record.status is RunStatus.SUCCESS, record
    pages = [p for p in site.paths() if p.startswith(("/p/", "/z/"))]
    assert sorted(pages) == sorted(u.removeprefix(site.base) for u in plain + zipped)
    assert len(pages) == len(set(pages)) == 12
    assert (record.processed, record.failed, record.skipped) == (12, 0, 0)
    meta = record.metadata
    assert meta["urls"] == 12
    assert meta["bytes"] == 1200
    assert meta["statuses"] == {"200": 12}
    assert meta["p50Ms"] <= meta["p95Ms"] <= meta["maxMs"]
    assert len(meta["slowest"]) == 5
    assert set(meta["slowest"][0]) == {"url", "ms"}
    ua = next(h for _, p, h in site.requests if p == "/p/3")["User-Agent"]
    assert ua.startswith("warmupd/")


async def test_in_flight_never_exceeds_concurrency_nor_per_host_concurrency(world: World) -> None:
    urls = []
    for site in (world.site, world.other):
        site.delay_s = 0.02
        for n in range(12):
            site.page(f"/u/{n}")
            urls.append(site.url(f"/u/{n}"))
    record, _ = await world.run({"urls": urls, "concurrency": 3, "per_host_concurrency": 2})
    assert record.processed == 24
    peaks = world.site.peaks
    assert peaks["all"] <= 3
    assert peaks["127.0.0.1"] <= 2
    assert peaks["127.0.0.2"] <= 2
    assert peaks["all"] == 3  # the limits are reached, not just respected by running serially


async def test_rate_holds_per_host_counted_on_the_injected_clock(world: World) -> None:
    clock = FakeClock()
    urls = []
    for site in (world.site, world.other):
        for n in range(8):
            site.page(f"/r/{n}")
            urls.append(site.url(f"/r/{n}"))
    record, job = await world.run(
        {"urls": urls, "concurrency": 8, "rate": "4/s"}, clock=clock, pump=True
    )
    assert record.processed == 16
    for host in ("127.0.0.1", "127.0.0.2"):
        starts = job.gate.starts(host)
        assert len(starts) == 8
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 0.25 - 1e-9  # 4/s: starts at least 1/4 s apart on that host
        # In any one virtual second, at most 4 starts.
        assert max(sum(1 for s in starts if t <= s < t + 1) for t in starts) <= 4


async def test_host_gate_counts_starts_and_pauses_without_real_time() -> None:
    clock = FakeClock()
    gate = HostGate(clock, per_host_concurrency=1, rate_per_s=2)
    order: list[tuple[str, float]] = []

    async def request(host: str, tag: str) -> None:
        async with gate.slot(host):
            order.append((tag, clock.monotonic()))

    tasks = [asyncio.create_task(request("a", f"a{n}")) for n in range(3)]
    tasks.append(asyncio.create_task(request("b", "b0")))
    for _ in range(10):
        await clock.advance(0.5)
    await asyncio.gather(*tasks)
    t0 = order[0][1]
    assert [(tag, t - t0) for tag, t in order if tag.startswith("a")] == [
        ("a0", 0),
        ("a1", 0.5),
        ("a2", 1.0),
    ]
    assert ("b0", t0) in order  # another host is not held back
    assert gate.pause("a", 600) == 60  # Retry-After is capped at 60 s
    assert retry_after_s("7", 0) == 7
    assert retry_after_s("soon", 0) is None
    assert retry_after_s(None, 0) is None
    assert retry_after_s("Thu, 01 Jan 1970 00:00:30 GMT", 10_000) == 20


async def test_500s_timeouts_and_refused_connections_fail_with_url_errors(world: World) -> None:
    site = world.site
    site.page("/ok")
    site.page("/broken", status=500)
    hang = asyncio.Event()

    async def never(_: web.Request) -> web.StreamResponse:
        await hang.wait()
        return web.Response()

    site.handle("/hang", never)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/gone"
    urls = [site.url("/ok"), site.url("/broken"), site.url("/hang"), closed]
    record, _ = await world.run({"urls": urls, "item_timeout": "300ms"})
    hang.set()
    assert record.status is RunStatus.SUCCESS
    assert (record.processed, record.failed) == (1, 3)
    errors = sorted(record.errors)
    assert [e for e in errors if e.startswith(closed)] == [
        f"{closed}: cannot connect: Connection refused"
    ], errors
    assert f"{site.url('/broken')}: HTTP 500" in errors
    assert f"{site.url('/hang')}: timed out after 0.3s" in errors
    assert record.metadata["statuses"] == {"200": 1, "500": 1}


async def test_redirects_are_followed_up_to_five(world: World) -> None:
    site = world.site
    for n in range(6):
        site.page(f"/hop/{n}", status=302, Location=f"/hop/{n + 1}")
    site.page("/hop/6")
    record, _ = await world.run({"urls": [site.url("/hop/1"), site.url("/hop/0")]})
    assert (record.processed, record.failed) == (1, 1)  # 5 hops fine, 6 hops too many
    assert record.errors == (f"{site.url('/hop/0')}: too many redirects (more than 5)",)
    assert site.paths().count("/hop/6") == 1


async def test_429_with_retry_after_pauses_the_host_then_asks_again(world: World) -> None:
    site = world.site
    calls = {"n": 0}

    async def busy(_: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.Response(status=429, headers={"Retry-After": "7"})
        return web.Response(text="ok")

    site.handle("/busy", busy)
    for n in range(4):
        site.page(f"/q/{n}")
    site.page("/unavailable", status=503)  # no Retry-After: a plain failure, no pause
    urls = [site.url("/busy"), *(site.url(f"/q/{n}") for n in range(4)), site.url("/unavailable")]
    clock = FakeClock()
    record, job = await world.run({"urls": urls, "concurrency": 2}, clock=clock, pump=True)
    assert (record.processed, record.failed) == (5, 1)
    assert record.errors == (f"{site.url('/unavailable')}: HTTP 503",)
    assert calls["n"] == 2
    starts = job.gate.starts("127.0.0.1")
    first = starts[0]
    # The 429 came back right after the first start; nothing went to that host for 7 s after it,
    # except what had started beside it before the answer.
    later = starts[2:]
    assert later
    assert all(s >= first + 7 for s in later), [s - first for s in starts]
    assert record.metadata["statuses"] == {"200": 5, "429": 1, "503": 1}


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]>
<urlset><url><loc>&lol2;</loc></url></urlset>"""


@pytest.mark.parametrize("attack", ["billion_laughs", "xxe_file", "xxe_http"])
async def test_a_sitemap_with_a_dtd_or_entities_is_refused_and_reads_nothing(
    world: World, attack: str, tmp_path: Path
) -> None:
    site = world.site
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FILE-CONTENT")
    site.page("/xxe", b"FETCHED-BY-XXE")
    docs = {
        "billion_laughs": BILLION_LAUGHS,
        "xxe_file": (
            f'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file://{secret}">]>'
            "<urlset><url><loc>&x;</loc></url></urlset>"
        ).encode(),
        "xxe_http": (
            f'<?xml version="1.0"?><!DOCTYPE u SYSTEM "{site.url("/xxe")}">'
            f"<urlset><url><loc>{site.url('/page')}</loc></url></urlset>"
        ).encode(),
    }
    site.sitemap("/evil.xml", docs[attack])
    record, _ = await world.run({"sitemap": site.url("/evil.xml")})
    assert record.status is RunStatus.FAILED
    assert record.reason is not None
    assert "refused: the document has a DOCTYPE" in record.reason
    assert site.url("/evil.xml") in record.reason
    assert "/xxe" not in site.paths()
    assert "/page" not in site.paths()
    assert "TOP-SECRET" not in repr(record)


async def test_a_sitemap_index_that_refers_to_itself_stops_with_an_error(world: World) -> None:
    site = world.site
    site.sitemap("/index.xml", sitemapindex([site.url("/child.xml")]))
    site.sitemap("/child.xml", sitemapindex([site.url("/index.xml")]))
    record, _ = await world.run({"sitemap": site.url("/index.xml")})
    assert record.status is RunStatus.FAILED
    assert record.reason == (
        f"error: sitemap index {site.url('/child.xml')} refers back to {site.url('/index.xml')}"
    )
    assert site.paths() == ["/index.xml", "/child.xml"]


async def test_sitemap_indexes_nest_at_most_three_levels(world: World) -> None:
    site = world.site
    for n in range(1, 4):
        site.sitemap(f"/l{n}.xml", sitemapindex([site.url(f"/l{n + 1}.xml")]))
    site.sitemap("/l4.xml", urlset([site.url("/deep")]))
    record, _ = await world.run({"sitemap": site.url("/l1.xml")})
    assert record.status is RunStatus.FAILED
    assert "nests deeper than 3 levels" in (record.reason or "")
    assert "/l4.xml" not in site.paths()


async def test_urls_on_another_host_are_not_requested_unless_allow_hosts_lists_it(
    world: World,
) -> None:
    site, other = world.site, world.other
    site.page("/mine")
    other.page("/theirs")
    site.sitemap(
        "/sitemap.xml",
        urlset([site.url("/mine"), other.url("/theirs"), "ftp://127.0.0.1/file"]),
    )
    record, _ = await world.run({"sitemap": site.url("/sitemap.xml")})
    assert (record.processed, record.skipped, record.failed) == (1, 2, 0)
    assert other.requests == []
    record, _ = await world.run({"sitemap": site.url("/sitemap.xml"), "allow_hosts": ["127.0.0.2"]})
    assert (record.processed, record.skipped) == (2, 1)
    assert other.paths() == ["/theirs"]


async def test_a_gzip_bomb_stops_at_the_size_cap(world: World) -> None:
    site = world.site
    # Well-formed as far as it goes, so only the cap can stop it.
    bomb = gzip.compress(b"<urlset>" + b" " * (51 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    site.page("/bomb.xml.gz", bomb, content_type="application/gzip")
    record, _ = await world.run({"sitemap": site.url("/bomb.xml.gz")})
    assert record.status is RunStatus.FAILED
    assert record.reason == (
        f"error: sitemap {site.url('/bomb.xml.gz')}: larger than 52428800 bytes after decompression"
    )


async def test_headers_env_values_are_sent_and_never_logged_or_stored(
    world: World, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDN_TOKEN", SECRET_TOKEN)
    site = world.site
    site.page("/a")
    site.page("/b", status=500)
    configure_logging("text", "debug")
    try:
        record, _ = await world.run(
            {
                "urls": [site.url("/a"), site.url("/b")],
                "headers": {"X-Warm": "yes"},
                "headers_env": {"Authorization": "CDN_TOKEN"},
            }
        )
        sent = {p: h for _, p, h in site.requests}
        assert sent["/a"]["Authorization"] == SECRET_TOKEN
        assert sent["/a"]["X-Warm"] == "yes"
        monkeypatch.delenv("CDN_TOKEN")
        unset, _ = await world.run(
            {"urls": [site.url("/a")], "headers_env": {"Authorization": "CDN_TOKEN"}}
        )
    finally:
        reset_logging()
    assert record.failed == 1
    assert unset.status is RunStatus.FAILED
    assert (
        unset.reason
        == "error: headers_env.Authorization: environment variable CDN_TOKEN is not set"
    )
    out, err = capfd.readouterr()
    assert "run.finished" in err
    assert SECRET_TOKEN not in out + err
    assert SECRET_TOKEN not in repr(record)
    await world.db.close()
    for path in world.tmp.glob("w.db*"):
        assert SECRET_TOKEN.encode() not in path.read_bytes()


async def test_index_children_on_another_host_are_skipped_and_shared_children_read_once(
    world: World,
) -> None:
    site, other = world.site, world.other
    site.page("/p")
    other.sitemap("/foreign.xml", urlset([other.url("/x")]))
    site.sitemap("/one.xml", urlset([site.url("/p")]))
    site.sitemap("/two.xml", sitemapindex([site.url("/one.xml")]))
    site.sitemap(
        "/index.xml",
        sitemapindex([site.url("/one.xml"), site.url("/two.xml"), other.url("/foreign.xml")]),
    )
    record, _ = await world.run({"sitemap": site.url("/index.xml")})
    assert record.status is RunStatus.SUCCESS
    assert record.processed == 1
    assert record.metadata["skippedSitemaps"] == 1
    assert other.requests == []
    assert site.paths().count("/one.xml") == 1


@pytest.mark.parametrize("problem", ["404", "hang", "refused"])
async def test_a_sitemap_that_cannot_be_read_fails_the_run_naming_it(
    world: World, problem: str
) -> None:
    site = world.site
    hang = asyncio.Event()

    async def never(_: web.Request) -> web.StreamResponse:
        await hang.wait()
        return web.Response()

    site.handle("/hang.xml", never)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/sitemap.xml"
    url = {"404": site.url("/missing.xml"), "hang": site.url("/hang.xml"), "refused": closed}[
        problem
    ]
    record, _ = await world.run({"sitemap": url, "item_timeout": "300ms"})
    hang.set()
    assert record.status is RunStatus.FAILED
    expected = {
        "404": "HTTP 404",
        "hang": "timed out after 0.3s",
        "refused": "cannot connect: Connection refused",
    }[problem]
    assert record.reason == f"error: sitemap {url}: {expected}"


async def test_a_dropped_connection_is_a_failed_url_with_the_client_error(world: World) -> None:
    site = world.site

    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    site.handle("/drop", drop)
    record, _ = await world.run({"urls": [site.url("/drop")]})
    assert record.status is RunStatus.FAILED
    assert record.errors[0].startswith(f"{site.url('/drop')}: ServerDisconnectedError")
