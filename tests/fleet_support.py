"""A fleet of real ``warmupd serve`` processes on one shared database (SPEC §14), and its helpers.

:func:`start_fleet` takes the database URL, the lock set-up and any extra config, so the same fleet
runs on a PostgreSQL database directly, through a pooler (PgBouncer: pass its URL and
``{"database": {"statement_cache": False}}``) or with another lock backend (:func:`redis_locks`
today; PostgreSQL leases once they land). The shared log and cache are read straight from the
database with asyncpg (on a private loop, see :func:`tests.pg_support.run_admin`), never through
the daemons under test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.daemon_support import DaemonProcess, merge
from tests.lock_support import REDIS_URL, ROOT, delete_prefix, free_port, new_prefix, worker_env
from tests.pg_support import run_admin


@contextmanager
def redis_locks() -> Iterator[dict[str, Any]]:
    """Locks in the machine's Redis under a prefix of their own (deleted afterwards)."""
    prefix = new_prefix()
    try:
        yield {"redis": {"url": REDIS_URL, "key_prefix": prefix}}
    finally:
        delete_prefix(prefix)


@dataclass
class Fleet:
    """N daemons with one config but their own port, log and state dir (unused: state is shared)."""

    db_url: str
    daemons: list[DaemonProcess] = field(default_factory=list)

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Rows of ``sql`` on the shared database, as dicts."""

        async def fetch() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.db_url, timeout=5)
            try:
                return [dict(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return run_admin(fetch)

    def runs(self, job: str) -> list[dict[str, Any]]:
        """The shared run log of ``job``, oldest first, metadata decoded."""
        rows = self.query("SELECT * FROM job_runs WHERE job = $1 ORDER BY id", job)
        for row in rows:
            row["metadata"] = json.loads(row["metadata"])
        return rows

    def alive(self) -> list[DaemonProcess]:
        return [d for d in self.daemons if d.proc is not None and d.proc.poll() is None]

    def metric_sum(self, series: str) -> float:
        """The sum over the live daemons of one exact series line of ``/metrics``."""
        total = 0.0
        for daemon in self.alive():
            _, text, _ = daemon.request("GET", "/metrics")
            match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
            total += float(match.group(1)) if match else 0.0
        return total

    def stop(self) -> list[int | None]:
        """SIGTERM every daemon still running; their exit codes."""
        return [d.stop() for d in self.daemons]

    def kill(self) -> None:
        for daemon in self.daemons:
            daemon.kill()


def start_fleet(
    root: Path,
    *,
    db_url: str,
    locks: dict[str, Any],
    extra: dict[str, Any] | None = None,
    count: int = 3,
) -> Fleet:
    """Start ``count`` daemons on ``db_url`` together (they migrate once, under the advisory lock)."""
    fleet = Fleet(db_url)
    config = merge(merge({"database": {"url": db_url}}, locks), extra or {})
    try:
        for n in range(count):
            fleet.daemons.append(DaemonProcess(root, f"d{n}", config).start(wait=False))
        for daemon in fleet.daemons:
            daemon.wait_healthy(timeout_s=60)
    except BaseException:
        fleet.kill()
        raise
    return fleet


class FakeModelServer:
    """``bench/fake_model.py`` as a subprocess on a free loopback port: an OpenAI-compatible model
    answering every prompt after a fixed delay and counting the requests."""

    def __init__(self, root: Path, delay_s: float) -> None:
        self.port = free_port()
        delays = root / "delays.json"
        delays.write_text(json.dumps([delay_s]))
        self.log = root / "fake-model.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.fake_model",
                    "--port",
                    str(self.port),
                    "--delays",
                    str(delays),
                ],
                cwd=ROOT,
                env=worker_env(),
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/healthz")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(self.log.read_text()) from None
                time.sleep(0.05)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
            return json.loads(resp.read())

    def requests(self) -> int:
        """Chat completions received since the start or the last :meth:`reset`."""
        return int(self._call("GET", "/stats")["requests"])

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
