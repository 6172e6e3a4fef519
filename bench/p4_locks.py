"""P4 — lock acquire+release round trips per second, each backend beside its bare reference.

Run: ``python -m bench.p4_locks`` (``--quick`` for a smoke run; ``--only postgresql`` for one backend).

* Redis: :class:`warmupd.locks.redis.RedisLocks` (acquire = one Lua script with ``INCR`` fence,
  release = one owner-checked Lua script) against redis-py's own ``redis.asyncio.lock.Lock``
  (``blocking=False``, ``timeout`` > 0, ``thread_local=False``; acquire = ``SET NX PX``, release =
  its Lua script), a new ``Lock`` object per round trip as redis-py recommends, on the same server
  under a private key prefix that is deleted afterwards. Target ≥ 0.9×.
* SQLite: :class:`warmupd.locks.sqlite.SqliteLocks` over :class:`warmupd.state.sqlite.SqliteDatabase` against a bare
  aiosqlite connection to the same file doing the minimum lease: one ``INSERT … ON CONFLICT … DO
  UPDATE … WHERE … RETURNING`` upsert (``execute_fetchall``, one thread hop) and one conditional
  ``UPDATE`` on the same ``locks`` table. Target ≥ 0.8×.
* PostgreSQL: :class:`warmupd.locks.postgres.PostgresLocks` over
  :class:`warmupd.state.postgres.PostgresDatabase` (its pool, statements prepared by asyncpg's
  cache) against one bare asyncpg connection doing the minimum lease with two statements prepared
  once: one ``INSERT … ON CONFLICT … DO UPDATE … WHERE … RETURNING`` upsert and one conditional
  ``UPDATE``, both on the server's clock like warmupd's, on the same ``locks`` table of a database
  created for the run on the server of ``$WARMUPD_BENCH_PG`` (default: the test server) and dropped
  afterwards. Target ≥ 0.8× (SPEC §14).

A round trip is one uncontended acquire of a fresh token and its release. The variants run one
after the other in alternating order (ABAB…), each repetition a fixed number of round trips; the
figure is the median of the per-repetition rates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
from redis.asyncio import Redis
from redis.asyncio.lock import Lock as RedisPyLock

from bench import pg
from bench.common import REDIS_URL, Result, Verdict, describe, finish, interleaved, machine_line
from warmupd.clock import SystemClock
from warmupd.locks.postgres import SERVER_NOW_MS, PostgresLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Acquired
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SqliteDatabase

LEASE_MS = 30_000
BACKENDS = ("redis", "sqlite", "postgresql")

_BARE_ACQUIRE = """
INSERT INTO locks(key, owner, fence, acquired_at, expires_at, holder)
VALUES (:key, :owner, 1, :now, :expires, :holder)
ON CONFLICT(key) DO UPDATE SET
    owner = excluded.owner, fence = locks.fence + 1, acquired_at = excluded.acquired_at,
    expires_at = excluded.expires_at, holder = excluded.holder
WHERE locks.owner = '' OR locks.expires_at <= :now
RETURNING fence
"""
_BARE_RELEASE = """
UPDATE locks SET owner = '', expires_at = 0, holder = ''
WHERE key = :key AND owner = :owner AND expires_at > :now
"""


_PG_NOW = f"(SELECT {SERVER_NOW_MS} AS ms) AS n"
_PG_BARE_ACQUIRE = f"""
INSERT INTO locks AS l (key, owner, fence, acquired_at, expires_at, holder)
SELECT $1::text, $2::text, 1, n.ms, n.ms + $3::bigint, $4::text FROM {_PG_NOW}
ON CONFLICT (key) DO UPDATE SET
    owner = excluded.owner, fence = l.fence + 1, acquired_at = excluded.acquired_at,
    expires_at = excluded.expires_at, holder = excluded.holder
WHERE l.owner = '' OR l.expires_at <= excluded.acquired_at
RETURNING l.fence
"""
_PG_BARE_RELEASE = f"""
UPDATE locks SET owner = '', expires_at = 0, holder = '' FROM {_PG_NOW}
WHERE key = $1 AND owner = $2 AND expires_at > n.ms
"""


def _rate(rounds: int, body: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[float]]:
    """A repetition: ``rounds`` sequential round trips; returns round trips per second."""

    async def one_repetition() -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            await body()
        return rounds / (time.perf_counter() - started)

    return one_repetition


async def bench_redis(rounds: int, repetitions: int) -> dict[str, Any]:
    """RedisLocks vs redis-py's asyncio Lock on the same server; rates in round trips/s."""
    prefix = f"warmupd-bench-{os.getpid()}-{secrets.token_hex(4)}:"
    clock = SystemClock()
    ours = RedisLocks(REDIS_URL, prefix, 2.0, clock, "bench")
    # The same explicit timeouts as warmupd's client, so neither side pays for a different setup.
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2.0, socket_timeout=2.0)
    ref_name = f"{prefix}redis-py-lock"

    async def warmupd_round() -> None:
        result = await ours.acquire("bench:p4", LEASE_MS)
        if not isinstance(result, Acquired):
            raise RuntimeError(f"uncontended acquire answered {result!r}")
        if not await ours.release(result.lease):
            raise RuntimeError("release of a held lease answered False")

    async def redispy_round() -> None:
        lock = RedisPyLock(
            client, ref_name, timeout=LEASE_MS / 1000, blocking=False, thread_local=False
        )
        if not await lock.acquire():
            raise RuntimeError("uncontended redis-py acquire failed")
        await lock.release()

    try:
        for body in (warmupd_round, redispy_round):  # load the scripts, open the connections
            for _ in range(50):
                await body()
        rates = await interleaved(
            {
                "warmupd": _rate(rounds, warmupd_round),
                "redis-py": _rate(rounds, redispy_round),
            },
            repetitions,
        )
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await ours.close()
    return rates


async def bench_sqlite(rounds: int, repetitions: int, path: Path) -> dict[str, Any]:
    """SqliteLocks vs a bare two-statement aiosqlite lease on the same file."""
    clock = SystemClock()
    async with SqliteDatabase(path) as db:
        ours = SqliteLocks(db, clock, "bench")
        bare = await aiosqlite.connect(path, isolation_level=None)
        try:
            await bare.execute("PRAGMA busy_timeout = 5000")
            await bare.execute("PRAGMA synchronous = NORMAL")

            async def warmupd_round() -> None:
                result = await ours.acquire("bench:p4:warmupd", LEASE_MS)
                if not isinstance(result, Acquired):
                    raise RuntimeError(f"uncontended acquire answered {result!r}")
                if not await ours.release(result.lease):
                    raise RuntimeError("release of a held lease answered False")

            async def bare_round() -> None:
                token = secrets.token_hex(16)
                now = clock.wall_ms()
                rows = await bare.execute_fetchall(
                    _BARE_ACQUIRE,
                    {
                        "key": "bench:p4:bare",
                        "owner": token,
                        "now": now,
                        "expires": now + LEASE_MS,
                        "holder": "bench",
                    },
                )
                if not rows:
                    raise RuntimeError("uncontended bare acquire failed")
                async with bare.execute(
                    _BARE_RELEASE, {"key": "bench:p4:bare", "owner": token, "now": clock.wall_ms()}
                ) as cur:
                    if cur.rowcount != 1:
                        raise RuntimeError("bare release matched no row")

            for body in (warmupd_round, bare_round):
                for _ in range(50):
                    await body()
            rates = await interleaved(
                {"warmupd": _rate(rounds, warmupd_round), "bare": _rate(rounds, bare_round)},
                repetitions,
            )
        finally:
            await bare.close()
    return rates


async def bench_postgres(rounds: int, repetitions: int) -> dict[str, Any]:
    """PostgresLocks vs a bare two-statement asyncpg lease, on a database made for this run."""
    with pg.fresh_database("p4") as url:
        async with PostgresDatabase(url) as db:
            ours = PostgresLocks(db, SystemClock(), "bench")
            bare = await asyncpg.connect(url, timeout=5)
            try:
                acquire = await bare.prepare(_PG_BARE_ACQUIRE)
                release = await bare.prepare(_PG_BARE_RELEASE)

                async def warmupd_round() -> None:
                    result = await ours.acquire("bench:p4:warmupd", LEASE_MS)
                    if not isinstance(result, Acquired):
                        raise RuntimeError(f"uncontended acquire answered {result!r}")
                    if not await ours.release(result.lease):
                        raise RuntimeError("release of a held lease answered False")

                async def bare_round() -> None:
                    token = secrets.token_hex(16)
                    if await acquire.fetchval("bench:p4:bare", token, LEASE_MS, "bench") is None:
                        raise RuntimeError("uncontended bare acquire failed")
                    await release.fetch("bench:p4:bare", token)
                    if release.get_statusmsg() != "UPDATE 1":
                        raise RuntimeError("bare release matched no row")

                for body in (warmupd_round, bare_round):
                    for _ in range(50):
                        await body()
                rates = await interleaved(
                    {"warmupd": _rate(rounds, warmupd_round), "bare": _rate(rounds, bare_round)},
                    repetitions,
                )
            finally:
                await bare.close()
    return rates


def _verdict(target: str, ours: list[float], ref: list[float], name: str, bound: float) -> Verdict:
    a, b = describe(ours)["p50"], describe(ref)["p50"]
    return Verdict(
        target=target,
        what=f"{name} lock acquire+release round trips",
        figure=f"{a:,.0f}/s",
        reference=f"{b:,.0f}/s",
        ratio=a / b,
        bound=f"≥ {bound}×",
        met=a / b >= bound,
    )


async def _run(quick: bool, only: tuple[str, ...]) -> Result:
    rounds, repetitions = (200, 2) if quick else (2_000, 8)
    rates: dict[str, dict[str, list[float]]] = {}
    verdicts = []
    if "redis" in only:
        rates["redis"] = await bench_redis(rounds, repetitions)
        verdicts.append(
            _verdict("P4", rates["redis"]["warmupd"], rates["redis"]["redis-py"], "Redis", 0.9)
        )
    if "sqlite" in only:
        with tempfile.TemporaryDirectory(prefix="warmupd-bench-p4-") as tmp:
            rates["sqlite"] = await bench_sqlite(rounds, repetitions, Path(tmp) / "warmupd.db")
        verdicts.append(
            _verdict("P4", rates["sqlite"]["warmupd"], rates["sqlite"]["bare"], "SQLite", 0.8)
        )
    if "postgresql" in only:
        rates["postgresql"] = await bench_postgres(rounds, repetitions)
        verdicts.append(
            _verdict(
                "P4", rates["postgresql"]["warmupd"], rates["postgresql"]["bare"], "PostgreSQL", 0.8
            )
        )
    data: dict[str, Any] = {"rounds_per_repetition": rounds, "repetitions": repetitions}
    for backend, by_variant in rates.items():
        data[backend] = {k: describe(v) | {"raw": v} for k, v in by_variant.items()}
    return Result(name="p4_locks", verdicts=verdicts, data=data)


def run(quick: bool = False, only: tuple[str, ...] = BACKENDS) -> Result:
    """Run P4 (every backend, or ``only`` some) and return its verdicts (printed and saved under
    ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p4_locks] machine: {machine_line()}")
    result = asyncio.run(_run(quick, only))
    for backend in only:
        for variant, stats in result.data[backend].items():
            print(
                f"  {backend:10} {variant:8} median {stats['p50']:8,.0f}/s  "
                f"min {stats['min']:8,.0f}  max {stats['max']:8,.0f}  (n={stats['n']})"
            )
    return finish(result, started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p4_locks [--quick]``; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.p4_locks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few hundred round trips only")
    parser.add_argument(
        "--only", choices=BACKENDS, action="append", help="this backend only (repeatable)"
    )
    args = parser.parse_args(argv)
    only = tuple(args.only) if args.only else BACKENDS
    return 0 if all(v.met for v in run(args.quick, only).verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
