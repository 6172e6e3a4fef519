"""Redis locks with a database safety net, per ``redis.on_unavailable`` (SPEC §5, §14; notes §10 B).

Design — **the database lease first, then Redis, with one token and the database's fence**. The
database is the state's: SQLite's lease rows (:class:`~warmupd.locks.sqlite.SqliteLocks`, this
host's processes) or PostgreSQL's (:class:`~warmupd.locks.postgres.PostgresLocks`, every daemon of
the fleet).

- Every acquisition first takes the database lease of the key, then the Redis lock with the same
  owner token. Held in the database → ``Held`` without asking Redis. Held in Redis → the database
  lease is released and the answer is ``Held``. Redis unavailable → policy ``database`` keeps the
  database lease and returns it (``lease.backend`` is the database's name, ``sqlite`` or
  ``postgresql``; the daemon is degraded); policy ``skip`` releases it and returns
  ``Unavailable("redis_unavailable")``.
- Why not "Redis first, the database only when Redis is down", as SPEC §14's wording reads: during a
  partial outage (one process times out on Redis, another does not) one process would hold the
  Redis lock and another the database lease of the same key, and both would run. Taking the
  database lease first makes its exclusion hold whether Redis is up, down or flapping; Redis adds
  its exclusion whenever it answers. What the spec asks for holds all the same: while Redis
  answers, Redis is asked for every lock and a lock it refuses is refused; when it does not, the
  database's lease rows are the fallback (``on_unavailable = "database"``), and new locks go back to
  Redis as soon as it answers. On SQLite the degraded mode excludes per host (several hosts at worst
  duplicate work into each host's own cache); on PostgreSQL the database lease already excludes
  across the fleet, so degraded mode loses nothing.
- The lease's fence is always the database's. The cache that fences are checked against lives in
  the same database, and the database's counter is the one counter every acquisition goes through
  in both modes (and without Redis at all), so switching between Redis and degraded mode — or Redis
  restarting empty and resetting its counters — never makes a fence go back.
- ``lease.backend`` names what guards the lease: ``redis`` (database + Redis) or the database's
  name (database only), so metrics label the real backend. Renew and release act on exactly those
  backends; a ``redis`` lease needs Redis to renew, so Redis going away mid-hold ends the hold at
  its local deadline (notes §10).
- Fire claims are database first, then Redis. With Redis unavailable the database claim alone
  decides (under either policy: the claimer then meets the policy at the job lock, so a ``skip``
  fire is recorded once per host — on PostgreSQL once per fleet — instead of once per process).
- Every Redis answer and every failed Redis call (and :meth:`FallbackLocks.ping`) is reported to
  the daemon's one :class:`~warmupd.health.Health` at that moment, so status, readiness and
  ``warmupd_redis_up`` change together; new locks go back to Redis as soon as it answers again —
  each acquire asks it.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

from warmupd.errors import ServiceUnavailable
from warmupd.health import Health
from warmupd.locks import AcquireObserver, Locks, spawn_background
from warmupd.locks.postgres import PostgresLocks
from warmupd.locks.redis import RedisLocks
from warmupd.locks.sqlite import SqliteLocks
from warmupd.logs import get_logger
from warmupd.models import Acquired, AcquireResult, Held, Lease, Unavailable

log = get_logger("warmupd.locks.fallback")

POLICIES = ("database", "skip")
"""``redis.on_unavailable`` values (the config also accepts ``sqlite``, an alias of ``database``)."""

DatabaseLocks = SqliteLocks | PostgresLocks
"""The lease backends on the state database."""


class FallbackLocks(Locks):
    """Database + Redis locks with a policy for Redis outages (see the module docstring).

    :param redis: the Redis backend; :param database: the state database's lease backend (neither
        is closed by :meth:`close`: whoever created them closes them).
    :param policy: ``database`` (fall back to database-only leases, degraded) or ``skip``.
    :param health: the health state to report Redis outcomes to (a private one if omitted).
    :raises ValueError: for an unknown policy.
    """

    def __init__(
        self,
        redis: RedisLocks,
        database: DatabaseLocks,
        policy: str,
        *,
        health: Health | None = None,
        on_acquire: AcquireObserver | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        super().__init__(on_acquire=on_acquire)
        self._redis = redis
        self._database = database
        self.policy = policy
        self.health = health if health is not None else Health(redis_configured=True)
        """Where every Redis outcome is reported (the daemon passes its one health state)."""

    @property
    def redis_up(self) -> bool:
        """Whether Redis answered the last request (``warmupd_redis_up``)."""
        return self.health.redis_up

    @property
    def degraded(self) -> bool:
        """Whether the daemon runs without Redis right now (status ``degraded``)."""
        return not self.redis_up

    @property
    def backend(self) -> str:
        """Where new locks go now: ``redis``, or the database's name (``sqlite``,
        ``postgresql``) while degraded under policy ``database``."""
        if self.degraded and self.policy == "database":
            return self._database.name
        return "redis"

    def _mark(self, up: bool) -> None:
        if self.health.observe_redis(up):
            log.warning("redis.up" if up else "redis.down", policy=self.policy)

    def _part(self, lease: Lease, backend: str) -> Lease:
        return replace(lease, backend=backend)

    def _local(self, lease: Lease) -> Lease:
        """``lease`` as the database backend knows it."""
        return replace(lease, backend=self._database.name)

    def fence_key(self, lease: Lease) -> str:
        """See :meth:`Locks.fence_key`: always the database's lineage, in both modes."""
        return f"{self._database.name}:{lease.key}"

    async def _acquire(self, key: str, lease_ms: int) -> AcquireResult:
        token = secrets.token_hex(16)
        local = await self._database._acquire_token(key, lease_ms, token)
        if not isinstance(local, Acquired):
            return local
        try:
            remote = await self._redis._acquire_token(key, lease_ms, token)
        except asyncio.CancelledError:
            # RedisLocks already cleans up its own side; the database side is ours to free.
            spawn_background(self._database._release_token(key, token))
            raise
        if isinstance(remote, Acquired):
            self._mark(True)
            return Acquired(self._part(local.lease, "redis"))
        if isinstance(remote, Held):
            self._mark(True)
            await self._release_local(local.lease)
            return remote
        self._mark(False)
        if self.policy == "database":
            log.warning("lock_degraded", key=key, reason=remote.reason)
            return local
        await self._release_local(local.lease)
        return Unavailable("redis_unavailable")

    async def _release_local(self, lease: Lease) -> None:
        try:
            await self._database.release(lease)
        except ServiceUnavailable as exc:
            log.warning("lock_release_failed", key=lease.key, error=type(exc).__name__)

    async def renew(self, lease: Lease) -> bool:
        """See :meth:`Locks.renew`; a ``redis`` lease renews in both backends."""
        if not await self._database.renew(self._local(lease)):
            return False
        if lease.backend != "redis":
            return True
        try:
            ok = await self._redis.renew(lease)
        except ServiceUnavailable:
            self._mark(False)
            raise
        self._mark(True)
        return ok

    async def release(self, lease: Lease) -> bool:
        """See :meth:`Locks.release`; both sides are attempted, Redis first.

        Redis first so that a process that wins the freed database lease does not meet a Redis
        lock we are about to drop (which would only make it skip needlessly).
        """
        remote = True
        error: ServiceUnavailable | None = None
        if lease.backend == "redis":
            try:
                remote = await self._redis.release(lease)
                self._mark(True)
            except ServiceUnavailable as exc:
                self._mark(False)
                error = exc
        local = await self._database.release(self._local(lease))
        if error is not None:
            raise error
        return local and remote

    async def tag_run(self, lease: Lease, run_id: int) -> bool:
        """See :meth:`Locks.tag_run`: in the database, and in Redis too for a ``redis`` lease."""
        local = await self._database.tag_run(self._local(lease), run_id)
        if lease.backend != "redis":
            return local
        try:
            remote = await self._redis.tag_run(lease, run_id)
        except ServiceUnavailable:
            self._mark(False)
            raise
        self._mark(True)
        return local and remote

    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        """See :meth:`Locks.claim_fire` and the module docstring."""
        if not await self._database.claim_fire(job, due_ms, ttl_ms):
            return False
        try:
            claimed = await self._redis.claim_fire(job, due_ms, ttl_ms)
        except ServiceUnavailable:
            self._mark(False)
            log.warning("fire_claim_degraded", job=job, due_ms=due_ms)
            return True
        self._mark(True)
        return claimed

    async def release_fire(self, job: str, due_ms: int) -> bool:
        """See :meth:`Locks.release_fire`: Redis first (best effort), then the database claim."""
        try:
            await self._redis.release_fire(job, due_ms)
        except ServiceUnavailable:
            self._mark(False)
        return await self._database.release_fire(job, due_ms)

    async def ping(self) -> bool:
        """Probe Redis and update :attr:`redis_up` (for a periodic health check)."""
        up = await self._redis.ping()
        self._mark(up)
        return up
