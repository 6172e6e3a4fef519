"""A lock-using worker process for the race and fault tests (run as a script by the tests).

Usage: ``python tests/lock_worker.py MODE BACKEND TARGET [options]``; it prints ``ready``, waits
for a line on stdin (so all workers start together), works, and writes its log to ``--out``.

Modes:
- ``race``: ``--rounds`` non-blocking acquire attempts on one key; each successful hold does a
  non-atomic read → yield → write on ``--counter`` and logs ``fence start_ns end_ns``.
- ``claim``: claims ``--rounds`` fires in order and logs ``due_ms 1|0``.
- ``hold``: acquires once with ``hold()`` (renewing), prints ``acquired FENCE``, then sleeps until
  killed.

``--broken`` swaps in a deliberately broken acquire (no NX / no owner check) for the negative
control of the race harness.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

from warmupd.clock import SystemClock
from warmupd.locks import Locks, hold
from warmupd.locks.postgres import SERVER_NOW_MS, PostgresLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.models import Acquired, AcquireResult, Lease
from warmupd.state.postgres import PostgresDatabase
from warmupd.state.sqlite import SqliteDatabase

KEY = "warmup:race:lock"

_BROKEN_SQL = """
INSERT INTO locks(key, owner, fence, acquired_at, expires_at, holder)
VALUES (:key, :owner, 1, :now, :expires, :holder)
ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, fence = locks.fence + 1,
    expires_at = excluded.expires_at
RETURNING fence
"""

_BROKEN_PG = f"""
INSERT INTO locks AS l (key, owner, fence, acquired_at, expires_at, holder)
SELECT ?::text, ?::text, 1, n.ms, n.ms + ?::bigint, '' FROM (SELECT {SERVER_NOW_MS} AS ms) AS n
ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, fence = l.fence + 1,
    expires_at = excluded.expires_at
RETURNING l.fence
"""

# INCR + SET without looking at the current holder: "SET without NX".
_BROKEN_LUA = """
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {fence, ''}
"""


class BrokenSqliteLocks(SqliteLocks):
    """Takes the row whoever holds it."""

    async def _acquire_token(self, key: str, lease_ms: int, token: str) -> AcquireResult:
        now = SystemClock().wall_ms()
        params = {"key": key, "owner": token, "now": now, "expires": now + lease_ms, "holder": ""}
        row = await self._db.fetchone(_BROKEN_SQL, params)
        assert row is not None
        lease = Lease(key=key, token=token, fence=int(row[0]), backend="sqlite", lease_ms=lease_ms)
        return Acquired(lease)


class BrokenPostgresLocks(PostgresLocks):
    """Takes the row whoever holds it."""

    async def _acquire_token(self, key: str, lease_ms: int, token: str) -> AcquireResult:
        row = await self._db.fetchone(_BROKEN_PG, (key, token, lease_ms))
        assert row is not None
        lease = Lease(key=key, token=token, fence=int(row[0]), backend=self.name, lease_ms=lease_ms)
        return Acquired(lease)


def broken_redis(locks: RedisLocks) -> RedisLocks:
    """Replace the acquire script of ``locks`` with one that ignores the holder."""
    locks._acquire_script = locks._client.register_script(_BROKEN_LUA)
    return locks


async def open_locks(
    args: argparse.Namespace, db: SqliteDatabase | PostgresDatabase | None
) -> Locks:
    clock = SystemClock()
    if isinstance(db, SqliteDatabase):
        cls = BrokenSqliteLocks if args.broken else SqliteLocks
        return cls(db, clock, f"worker-{args.id}")
    if isinstance(db, PostgresDatabase):
        pg_cls = BrokenPostgresLocks if args.broken else PostgresLocks
        return pg_cls(db, clock, f"worker-{args.id}")
    locks = RedisLocks(args.url, args.target, 2.0, clock, f"worker-{args.id}")
    return broken_redis(locks) if args.broken else locks


async def race(locks: Locks, args: argparse.Namespace, out: list[str]) -> None:
    counter = Path(args.counter)
    for _ in range(args.rounds):
        result = await locks.acquire(KEY, args.lease_ms)
        if not isinstance(result, Acquired):
            await asyncio.sleep(random.uniform(0, 0.002))
            continue
        start = time.monotonic_ns()
        value = int(counter.read_text() or "0")
        await asyncio.sleep(0.0002)  # widen the read→write window the lock must protect
        counter.write_text(str(value + 1))
        end = time.monotonic_ns()
        out.append(f"{result.lease.fence} {start} {end}")
        await locks.release(result.lease)


async def claim(locks: Locks, args: argparse.Namespace, out: list[str]) -> None:
    for i in range(args.rounds):
        due = 1_700_000_000_000 + i * 60_000
        won = await locks.claim_fire("warmup-race", due, 3_600_000)
        out.append(f"{due} {int(won)}")


async def hold_forever(locks: Locks, args: argparse.Namespace) -> None:
    async with hold(locks, args.key, args.lease_ms, SystemClock()) as handle:
        print(f"acquired {handle.lease.fence}", flush=True)
        await asyncio.Event().wait()


async def main(args: argparse.Namespace) -> None:
    db: SqliteDatabase | PostgresDatabase | None = None
    if args.backend == "sqlite":
        db = SqliteDatabase(args.target)
    elif args.backend == "postgresql":
        db = PostgresDatabase(args.target, pool_min=1, pool_max=2)
    if db is not None:
        await db.open()
    locks = await open_locks(args, db)
    out: list[str] = []
    try:
        if args.mode == "hold":
            await hold_forever(locks, args)
            return
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        if args.mode == "race":
            await race(locks, args, out)
        else:
            await claim(locks, args, out)
        Path(args.out).write_text("\n".join(out) + "\n")
    finally:
        await locks.close()
        if db is not None:
            await db.close()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["race", "claim", "hold"])
    parser.add_argument("backend", choices=["sqlite", "redis", "postgresql"])
    parser.add_argument("target", help="SQLite file, Redis key prefix, or PostgreSQL URL")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--id", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--lease-ms", type=int, default=10_000)
    parser.add_argument("--key", default=KEY)
    parser.add_argument("--counter", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--broken", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
