"""A small client of a running daemon's HTTP API, for the CLI commands ``trigger``, ``warmup``,
``status`` and ``runs`` (SPEC §10).

Errors come back as :class:`DaemonError` (the daemon answered an error envelope; 429 maps to exit
code 3) or :class:`DaemonUnreachable`, both :class:`~warmupd.errors.WarmupdError` so the CLI prints one
line and exits non-zero without a traceback. Secrets go in headers only and never into messages.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import aiohttp

from warmupd.config import Config
from warmupd.errors import WarmupdError


class DaemonUnreachable(WarmupdError):
    """No connection to the daemon (refused, timed out, bad address)."""

    code = "unreachable"


class DaemonError(WarmupdError):
    """The daemon answered with an error envelope."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.exit_code = 3 if status == 429 else 1
        super().__init__(f"{code} ({status}): {message}")


def default_url(cfg: Config) -> str:
    """The daemon's base URL from the config's ``[http]`` section (wildcard binds → loopback)."""
    host = cfg.http.host
    if host in {"0.0.0.0", ""}:  # noqa: S104 - mapping a wildcard bind to loopback, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.http.port}"


class DaemonClient:
    """``async with DaemonClient(url, job_secret=..., warmup_secret=...) as c: await c.status()``."""

    def __init__(
        self,
        base_url: str,
        *,
        job_secret: str | None = None,
        warmup_secret: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._job_secret = job_secret
        self._warmup_secret = warmup_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DaemonClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, *, warmup: bool = False) -> dict[str, str]:
        if warmup and self._warmup_secret:
            return {"X-Warmup-Secret": self._warmup_secret}
        return {"X-Job-Secret": self._job_secret} if self._job_secret else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        warmup: bool = False,
    ) -> tuple[int, Any]:
        if self._session is None:
            raise RuntimeError("DaemonClient used outside 'async with'")
        url = self.base_url + path
        try:
            async with self._session.request(
                method, url, json=body, params=params, headers=self._headers(warmup=warmup)
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise DaemonUnreachable(
                f"cannot reach the daemon at {self.base_url}: {reason}"
            ) from None
        try:
            data = json.loads(text)
        except ValueError:
            raise DaemonError(status, "bad_response", "the daemon did not answer JSON") from None
        if status >= 400:
            if isinstance(data, dict):
                raise DaemonError(
                    status, str(data.get("error", "error")), str(data.get("message", ""))
                )
            raise DaemonError(status, "error", text[:200])
        return status, data

    async def trigger(
        self,
        job: str,
        *,
        wait: bool = False,
        limit: int | None = None,
        concurrency: int | None = None,
    ) -> dict[str, Any]:
        """``POST /api/jobs/{job}``: the 202 answer, or the finished run record with ``wait``."""
        body = {
            k: v for k, v in {"limit": limit, "concurrency": concurrency}.items() if v is not None
        }
        _, data = await self._request(
            "POST",
            f"/api/jobs/{job}",
            body=body or None,
            params={"wait": "true"} if wait else None,
        )
        return dict(data)

    async def warmup(self, slug: str) -> dict[str, Any]:
        """``POST /api/comparison/warmup``."""
        _, data = await self._request(
            "POST", "/api/comparison/warmup", body={"slug": slug}, warmup=True
        )
        return dict(data)

    async def status(self) -> dict[str, Any]:
        """``GET /api/status``."""
        _, data = await self._request("GET", "/api/status")
        return dict(data)

    async def runs(
        self, *, job: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """``GET /api/jobs/runs``, newest first."""
        params = {
            k: str(v)
            for k, v in {"job": job, "status": status, "limit": limit}.items()
            if v is not None
        }
        _, data = await self._request("GET", "/api/jobs/runs", params=params)
        return list(data["runs"])


# --------------------------------------------------------------------------- tables


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain left-aligned text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _duration(ms: object) -> str:
    if not isinstance(ms, int):
        return "-"
    return f"{ms / 1000:.1f}s" if ms < 60_000 else f"{ms / 60_000:.1f}m"


def runs_table(runs: list[dict[str, Any]]) -> str:
    """Run records as a table."""
    headers = ["ID", "JOB", "STATUS", "TRIGGER", "STARTED", "DURATION", "OK/SKIP/FAIL", "REASON"]
    rows = [
        [
            str(r.get("id")),
            str(r.get("job")),
            str(r.get("status")),
            str(r.get("trigger")),
            str(r.get("startedAt") or "-"),
            _duration(r.get("durationMs")),
            f"{r.get('processed', 0)}/{r.get('skipped', 0)}/{r.get('failed', 0)}",
            str(r.get("reason") or ""),
        ]
        for r in runs
    ]
    return format_table(headers, rows)


def status_text(doc: dict[str, Any]) -> str:
    """The status document as a short report and a jobs table."""
    locks = doc.get("locks", {})
    db = doc.get("db", {})
    cache = doc.get("cache", {})
    on_demand = doc.get("onDemand", {})
    where = (
        f"{db.get('url')}  {db.get('state', 'up')}"
        if db.get("engine") == "postgresql"
        else f"{db.get('path')}  {db.get('sizeBytes')} bytes"
    )
    lines = [
        f"warmupd {doc.get('version')}  node {doc.get('node')}  state {doc.get('state')}",
        f"started   {doc.get('startedAt')}  (up {doc.get('uptimeS')} s)",
        f"locks     {locks.get('backend')}  redis {locks.get('redis')}",
        f"db        {where}  schema v{db.get('schemaVersion')}",
        f"cache     fresh {cache.get('fresh')}  stale {cache.get('stale')}  "
        f"expired {cache.get('expired')}",
        f"on-demand in flight {on_demand.get('inFlight')}  queued {on_demand.get('queued')}",
    ]
    lines += [f"degraded  {reason}" for reason in doc.get("reasons", [])]
    nodes = [n for n in doc.get("nodes", []) if isinstance(n, dict)]
    if nodes:
        keys = ["node", "version", "startedAt", "heartbeatAt", "skewMs"]
        rows = [["-" if n.get(k) is None else str(n[k]) for k in keys] for n in nodes]
        lines += ["", format_table(["NODE", "VERSION", "STARTED", "HEARTBEAT", "SKEW MS"], rows)]
    jobs = [j for j in doc.get("jobs", []) if isinstance(j, dict)]
    if jobs:
        keys = ["name", "enabled", "nextRunAt", "running"]
        rows = [[str(j.get(k, "-")) if j.get(k) is not None else "-" for k in keys] for j in jobs]
        lines += ["", format_table(["JOB", "ENABLED", "NEXT RUN", "RUNNING"], rows)]
    return "\n".join(lines)
