"""A fleet through PgBouncer in transaction mode (SPEC §14): PgBouncer 1.18 keeps no prepared
statements, so the daemons run with ``[database] statement_cache = false``.

Two real ``warmupd serve`` processes share one database through :func:`tests.pg_private.start_pgbouncer`:
a comparison PUT through one is read through the other, a run triggered on one is in the other's
run log, an on-demand warmup asked of one reaches ``ready``, and no log shows a prepared-statement
error or a traceback. A control shows the launcher really pools per transaction: with asyncpg's
statement cache on, a statement prepared on one server connection is missing on the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.daemon_support import JOB_SECRET, WARMUP_SECRET, DaemonProcess, wait_until
from tests.pg_private import PgBouncer, start_pgbouncer
from tests.pg_support import (
    ADMIN_URL,
    create_database,
    drop_database,
    new_database_name,
    require_postgres,
    run_admin,
)

pytestmark = pytest.mark.slow

SERIES = [
    {"date": f"2025-{month:02d}-{day:02d}", "tea": 40 + month + day % 7, "coffee": 60 - month}
    for month in range(1, 13)
    for day in (1, 8, 15, 22)
]
SERVER = urlsplit(ADMIN_URL)
"""The machine's server ($WARMUPD_TEST_PG), which PgBouncer fronts."""
PREPARED_ERRORS = ("prepared statement", "PreparedStatement", "InvalidSQLStatementName")


@pytest.fixture
def fresh_db() -> Iterator[str]:
    """A database of its own on the machine's server (dropped afterwards); its name."""
    require_postgres()
    name = new_database_name("bouncer_")
    run_admin(lambda: create_database(name))
    try:
        yield name
    finally:
        run_admin(lambda: drop_database(name))


def test_two_daemons_share_one_database_through_pgbouncer_in_transaction_mode(
    tmp_path: Path,
    daemons: list[DaemonProcess],
    fresh_db: str,
    pg_lock_config: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    url = start_pgbouncer(
        SERVER.port or 5432,
        fresh_db,
        finalizer=request.addfinalizer,
        server_host=SERVER.hostname or "127.0.0.1",
    )
    config = {
        "database": {"url": url, "statement_cache": False, "pool_max": 4},
        **pg_lock_config,
    }
    a = DaemonProcess(tmp_path, "a", config)
    b = DaemonProcess(tmp_path, "b", config)
    daemons.append(a.start())  # migrates through PgBouncer (a transaction-level advisory lock)
    daemons.append(b.start())

    body = {"terms": ["tea", "coffee"], "timeframe": "today 12-m", "series": SERIES}
    headers = {"X-Job-Secret": JOB_SECRET}
    status, data, _ = a.request("PUT", "/api/comparisons/tea-vs-coffee", body, headers)
    assert status == 201, data
    status, seen, _ = b.request("GET", "/api/comparison/tea-vs-coffee/status")
    assert (status, seen["dataHash"], seen["warmup"]) == (200, data["dataHash"], "idle"), seen

    status, run = a.trigger("warmup-forecasts", wait=True)
    assert (status, run["status"], run["processed"]) == (200, "success", 1), run
    status, page, _ = b.request("GET", "/api/jobs/runs?job=warmup-forecasts")
    assert status == 200, page
    assert [(r["id"], r["status"]) for r in page["runs"]] == [(run["id"], "success")]

    warmup = {"X-Warmup-Secret": WARMUP_SECRET}
    ask = {"slug": "tea-vs-coffee"}
    status, answer, _ = b.request("POST", "/api/comparison/warmup", ask, warmup)
    assert (status, answer["status"]) == (202, "queued"), answer  # the insights part is missing

    def ready_on_a() -> bool:  # read through the other daemon: the fleet shares the warmup
        return bool(
            a.request("GET", "/api/comparison/tea-vs-coffee/status")[1]["warmup"] == "ready"
        )

    wait_until(ready_on_a, timeout_s=60)
    status, pack, _ = a.request("GET", "/api/comparison/tea-vs-coffee")
    assert (status, pack["freshness"]) == (200, "fresh"), pack

    assert a.stop() == 0
    assert b.stop() == 0
    for daemon in (a, b):
        logs = daemon.logs()
        assert "Traceback" not in logs, logs
        assert not [e for e in PREPARED_ERRORS if e in logs], logs


async def _interleave(url: str, cache_size: int) -> str:
    """c2 holds one server connection in a transaction while c1 repeats a statement."""
    c1 = await asyncpg.connect(url, statement_cache_size=cache_size)
    c2 = await asyncpg.connect(url, statement_cache_size=cache_size)
    try:
        await c1.fetchval("SELECT $1::int + 1", 1)  # prepared on the server connection c1 got
        async with c2.transaction():
            await c2.fetchval("SELECT 1")  # PgBouncer (LIFO) hands c2 that same connection
            try:
                await c1.fetchval("SELECT $1::int + 1", 2)  # so c1 runs on the other one
            except asyncpg.PostgresError as exc:
                return type(exc).__name__
        return "ok"
    finally:
        await c1.close()
        await c2.close()


def test_control_the_launcher_pools_per_transaction(fresh_db: str) -> None:
    bouncer = PgBouncer(
        SERVER.port or 5432, server_host=SERVER.hostname or "127.0.0.1", pool_size=2
    )
    try:
        bouncer.start()
        url = bouncer.url(fresh_db)
        assert asyncio.run(_interleave(url, 0)) == "ok"  # what statement_cache = false does
        assert asyncio.run(_interleave(url, 100)) == "InvalidSQLStatementNameError"
    finally:
        bouncer.stop()
