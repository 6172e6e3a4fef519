"""In-memory fakes of the HTTP service protocols (warmupd.services): they record every call and can
be told to raise any error, so the edge can be tested without a database or a runner."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from warmupd.clock import ms_to_iso
from warmupd.config import Secrets
from warmupd.errors import AlreadyRunning, NotFound, StaleDataHash, WarmupdError
from warmupd.http import create_app
from warmupd.models import Comparison, RunRecord, RunStatus, Trigger

JOB_SECRET = "job-secret-0123456789abcdef"
WARMUP_SECRET = "warmup-secret-0123456789abcdef"
NOW_MS = 1_767_225_600_000
KNOWN_JOBS = ("warmup-forecasts", "warmup-ai-explanations", "housekeeping")
KNOWN_SLUGS = ("iphone-vs-android", "tea-vs-coffee")
WRITES = {"trigger", "upsert", "add_views", "request_warmup", "set_paused"}


class Recorder:
    """Call log plus per-method error injection shared by the fakes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.errors: dict[str, WarmupdError] = {}

    def record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if method in self.errors:
            raise self.errors[method]

    @property
    def writes(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [call for call in self.calls if call[0] in WRITES]


class FakeStatus:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.is_ready = True

    async def status(self) -> dict[str, Any]:
        self.recorder.record("status")
        return {
            "version": "0.1.0",
            "node": "host:1:abcdef",
            "startedAt": ms_to_iso(NOW_MS),
            "uptimeS": 12.5,
            "state": "ok",
            "reasons": [],
            "nodes": [
                {
                    "node": "host:1:abcdef",
                    "version": "0.1.0",
                    "startedAt": ms_to_iso(NOW_MS),
                    "heartbeatAt": ms_to_iso(NOW_MS),
                    "skewMs": 0,
                }
            ],
            "locks": {"backend": "sqlite", "redis": "unconfigured"},
            "db": {
                "engine": "sqlite",
                "path": "/var/lib/warmupd/warmupd.db",
                "sizeBytes": 40960,
                "schemaVersion": 4,
                "state": "up",
            },
            "jobs": [{"name": name, "running": None} for name in KNOWN_JOBS],
            "onDemand": {"inFlight": 1, "queued": 2},
            "cache": {"fresh": 10, "stale": 2, "expired": 1},
            "restartRequired": [],
        }

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        self.recorder.record("ready")
        return self.is_ready, {"db": "ok" if self.is_ready else "unavailable"}


@dataclass
class FakeHandle:
    run_id: int
    job: str
    record: RunRecord
    finish: asyncio.Event | None = None
    """When set, ``wait`` blocks on it (tests of client disconnects)."""
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    completed: bool = False
    cancelled: bool = False

    async def wait(self) -> RunRecord:
        self.waiting.set()
        try:
            if self.finish is not None:
                await self.finish.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.completed = True
        return self.record


def make_run(run_id: int, job: str, status: RunStatus = RunStatus.SUCCESS) -> RunRecord:
    done = status is not RunStatus.RUNNING
    return RunRecord(
        id=run_id,
        job=job,
        status=status,
        trigger=Trigger.HTTP,
        node="host:1:abcdef",
        started_at_ms=NOW_MS + run_id * 1000,
        finished_at_ms=NOW_MS + run_id * 1000 + 250 if done else None,
        duration_ms=250 if done else None,
        processed=3 if done else 0,
        skipped=1 if done else 0,
        failed=0,
        errors=(),
        metadata={"limit": 50, "concurrency": 5, "lockBackend": "sqlite", "fence": run_id},
    )


class FakeJobs:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.runs_by_id: dict[int, RunRecord] = {
            i: make_run(i, KNOWN_JOBS[i % 3], RunStatus.SUCCESS) for i in range(1, 6)
        }
        self.handles: list[FakeHandle] = []
        self.block_waits = False

    def job_names(self) -> list[str]:
        return list(KNOWN_JOBS)

    async def trigger(
        self,
        job: str,
        trigger: Trigger,
        *,
        limit: int | None = None,
        concurrency: int | None = None,
    ) -> FakeHandle:
        self.recorder.record("trigger", job, trigger, limit, concurrency)
        if job not in KNOWN_JOBS:
            raise NotFound(f"unknown job {job!r}")
        for handle in self.handles:
            if handle.job == job and not handle.completed and self.block_waits:
                raise AlreadyRunning(f"{job} is already running", run_id=handle.run_id)
        run_id = max(self.runs_by_id) + 1
        record = make_run(run_id, job)
        self.runs_by_id[run_id] = record
        handle = FakeHandle(run_id, job, record, asyncio.Event() if self.block_waits else None)
        self.handles.append(handle)
        return handle

    async def jobs(self) -> list[dict[str, Any]]:
        self.recorder.record("jobs")
        last = self.runs_by_id[max(self.runs_by_id)]
        return [
            {
                "name": name,
                "schedule": "0 2 * * *",
                "timezone": "UTC",
                "enabled": True,
                "nextRunAt": ms_to_iso(NOW_MS + 3_600_000),
                "lastRun": render_run(last) if last.job == name else None,
                "running": None,
            }
            for name in KNOWN_JOBS
        ]

    async def run(self, run_id: int) -> RunRecord | None:
        self.recorder.record("run", run_id)
        return self.runs_by_id.get(run_id)

    async def runs(
        self, *, job: str | None, status: str | None, limit: int, before: int | None
    ) -> list[RunRecord]:
        self.recorder.record("runs", job, status, limit, before)
        rows = sorted(self.runs_by_id.values(), key=lambda r: -r.id)
        return [
            r
            for r in rows
            if (job is None or r.job == job)
            and (status is None or r.status == status)
            and (before is None or r.id < before)
        ][:limit]

    async def timeline(self, since_ms: int, limit: int) -> list[RunRecord]:
        self.recorder.record("timeline", since_ms, limit)
        rows = sorted(self.runs_by_id.values(), key=lambda r: -r.id)
        return [r for r in rows if r.started_at_ms >= since_ms][:limit]

    async def set_paused(self, job: str, paused: bool) -> dict[str, Any]:
        self.recorder.record("set_paused", job, paused)
        if job not in KNOWN_JOBS:
            raise NotFound(f"unknown job {job!r}")
        return {"job": job, "paused": paused, "pausedAt": ms_to_iso(NOW_MS) if paused else None}


def render_run(record: RunRecord) -> dict[str, Any]:
    from warmupd.render import run_json

    return run_json(record)


class FakeComparisons:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.known: dict[str, Comparison] = {
            slug: Comparison(
                slug=slug,
                term_a=slug.split("-vs-")[0],
                term_b=slug.split("-vs-")[1],
                timeframe="today 12-m",
                series=(
                    {"date": "2026-01-01", slug.split("-vs-")[0]: 1, slug.split("-vs-")[1]: 2},
                ),
            )
            for slug in KNOWN_SLUGS
        }
        self.views: dict[str, int] = {}
        self.ready_slugs: set[str] = {"tea-vs-coffee"}

    def _get(self, slug: str) -> Comparison:
        if slug not in self.known:
            raise NotFound(f"no comparison {slug!r}")
        return self.known[slug]

    async def upsert(self, comparison: Comparison) -> tuple[bool, str]:
        self.recorder.record("upsert", comparison)
        created = comparison.slug not in self.known
        self.known[comparison.slug] = comparison
        return created, comparison.data_hash

    async def add_views(self, slug: str, count: int, at_ms: int | None) -> dict[str, Any]:
        self.recorder.record("add_views", slug, count, at_ms)
        self._get(slug)
        self.views[slug] = self.views.get(slug, 0) + count
        return {
            "slug": slug,
            "viewCount": self.views[slug],
            "lastVisited": ms_to_iso(at_ms if at_ms is not None else NOW_MS),
        }

    async def request_warmup(self, slug: str, data_hash: str | None) -> dict[str, Any]:
        self.recorder.record("request_warmup", slug, data_hash)
        current = self._get(slug).data_hash
        if data_hash is not None and data_hash != current:
            raise StaleDataHash(slug, data_hash, current)
        status = "ready" if slug in self.ready_slugs else "queued"
        return {"slug": slug, "dataHash": current, "status": status}

    async def warmup_status(self, slug: str) -> dict[str, Any]:
        self.recorder.record("warmup_status", slug)
        c = self._get(slug)
        ready = slug in self.ready_slugs
        state = "fresh" if ready else "missing"
        return {
            "slug": slug,
            "dataHash": c.data_hash,
            "warmup": "ready" if ready else "idle",
            "parts": {"forecastA": state, "forecastB": state, "insights": state},
            "updatedAt": ms_to_iso(NOW_MS),
        }

    async def pack(self, slug: str) -> bytes:
        self.recorder.record("pack", slug)
        c = self._get(slug)
        ready = slug in self.ready_slugs
        return json.dumps(
            {
                "slug": slug,
                "terms": [c.term_a, c.term_b],
                "dataHash": c.data_hash,
                "forecasts": {
                    "termA": {"points": []} if ready else None,
                    "termB": {"points": []} if ready else None,
                },
                "insights": {"meaning": "x"} if ready else None,
                "freshness": "fresh" if ready else "missing",
                "needsWarmup": not ready,
            }
        ).encode()


@dataclass
class FakeServices:
    """One set of fakes sharing a recorder, plus mutable secrets."""

    recorder: Recorder = field(default_factory=Recorder)
    secrets: Secrets = field(default_factory=lambda: Secrets(job=JOB_SECRET, warmup=WARMUP_SECRET))

    def __post_init__(self) -> None:
        self.status = FakeStatus(self.recorder)
        self.jobs = FakeJobs(self.recorder)
        self.comparisons = FakeComparisons(self.recorder)

    def current_secrets(self) -> Secrets:
        return self.secrets

    def unset(self, *, job: bool = False, warmup: bool = False) -> None:
        self.secrets = replace(
            self.secrets,
            job=None if job else self.secrets.job,
            warmup=None if warmup else self.secrets.warmup,
        )

    def app_kwargs(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "comparisons": self.comparisons,
            "secrets": self.current_secrets,
        }


class ThreadServer:
    """The app with fakes on a loopback port, served from its own thread and event loop.

    schemathesis calls the server synchronously, so the server cannot share the test's loop.
    """

    def __init__(self, fakes: FakeServices | None = None) -> None:
        self.fakes = fakes or FakeServices()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        fakes = self.fakes
        app = create_app(fakes.status, **fakes.app_kwargs(), max_body_bytes=1_048_576)
        self.runner = web.AppRunner(app, handle_signals=False)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def __enter__(self) -> str:
        self.thread.start()
        self.ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
