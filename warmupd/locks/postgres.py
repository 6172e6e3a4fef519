"""PostgreSQL lease rows: locks for every daemon sharing one PostgreSQL state (SPEC §5, §14).

Deviations from and details of the :class:`~warmupd.locks.Locks` contract:

- **The server's clock.** Every expiry is decided on the database server's clock
  (``clock_timestamp()`` in integer milliseconds, read inside the statement that compares it), never
  on a host's wall clock: hosts whose clocks disagree by minutes still agree on when a lease ends.
  The ``clock`` this backend is given (the daemon's) decides nothing here; :func:`~warmupd.locks.hold`
  keeps the holder's local deadline on the host's monotonic clock, which needs no agreement.
- **Atomicity.** Acquire is one autocommit ``INSERT … ON CONFLICT (key) DO UPDATE … WHERE owner = ''
  OR expired RETURNING fence`` statement: the row lock PostgreSQL takes for the conflict serialises
  "is it free?" and "take it" against every other daemon, and two first acquisitions of a new key
  meet on the primary key (the loser waits, then sees the winner's live lease: ``Held``). The holder
  is written by the same statement. Renew, release and :meth:`PostgresLocks.tag_run` are single
  ``UPDATE``\\ s conditional on the owner token and on the lease being live. No session state: no
  advisory locks, no ``SET``, no temporary tables, so it works through a transaction-mode pooler.
- **Fences are never reset.** Release clears the owner and keeps the row; the first acquisition of
  a key without a row starts at the greatest fence of any row + 1 (the ``MAX`` is only computed
  then: for a key whose row exists, the conflict path's ``fence + 1`` decides), and
  :meth:`PostgresLocks.purge_expired` never deletes the row holding the greatest fence. Unlike
  SQLite, PostgreSQL runs statements concurrently, each reading its own snapshot, so purge also
  takes ``LOCK TABLE locks IN SHARE ROW EXCLUSIVE MODE`` for its transaction: every acquire holds
  ``ROW EXCLUSIVE`` on the table from before its snapshot to its commit, so a purge is entirely
  before or entirely after each acquire. A key's row therefore cannot vanish while an acquire that
  saw it runs, and an acquire that did not see it reads a ``MAX`` above its last fence. Acquires
  wait for a purge (one short transaction per housekeeping run), never for each other.
- **Unreachable.** A server that cannot answer (connection refused or lost, pool closed, client
  timeout, shutdown, too many connections: the state database's
  :class:`~warmupd.errors.DatabaseUnavailable`) gives ``Unavailable("postgresql_unavailable")``
  from acquire and is raised (a :class:`~warmupd.errors.ServiceUnavailable`) by the others; an
  error in a statement PostgreSQL did answer is a bug and is raised as is. A release that could not
  reach the server is retried in the background (backing off to 2 s) for as long as the lease could
  still block the key, so a run that ended during an outage frees its key as soon as the database
  is back, not a lease later.
"""

from __future__ import annotations

import asyncio
import secrets

from warmupd.clock import Clock, backoff
from warmupd.errors import ServiceUnavailable
from warmupd.locks import AcquireObserver, Locks, check_key, release_surely, spawn_background
from warmupd.locks.holder import holder_text, parse_holder
from warmupd.models import Acquired, AcquireResult, Held, Lease, Unavailable
from warmupd.state.postgres import POSTGRES, PostgresDatabase

SERVER_NOW_MS = POSTGRES.clock_ms
"""The server's wall clock in integer milliseconds (``clock_timestamp()``: the time of the call, not
of the transaction's start, which would be older inside a long transaction or behind a pooler)."""

# `n` is evaluated once per statement, so the comparison and the new expiry use one instant.
_NOW = f"(SELECT {SERVER_NOW_MS} AS ms) AS n"

_ACQUIRE = f"""
INSERT INTO locks AS l (key, owner, fence, acquired_at, expires_at, holder)
SELECT a.key, a.owner,
       COALESCE((SELECT fence + 1 FROM locks WHERE key = a.key),
                (SELECT COALESCE(MAX(fence), 0) + 1 FROM locks)),
       n.ms, n.ms + a.lease_ms, a.holder
FROM (SELECT ?::text AS key, ?::text AS owner, ?::bigint AS lease_ms, ?::text AS holder) AS a,
     {_NOW}
ON CONFLICT (key) DO UPDATE SET
    owner = excluded.owner,
    fence = l.fence + 1,
    acquired_at = excluded.acquired_at,
    expires_at = excluded.expires_at,
    holder = excluded.holder
WHERE l.owner = '' OR l.expires_at <= excluded.acquired_at
RETURNING l.fence
"""

# `expires_at > n.ms`: an expired lease is lost even when nobody took it yet (the SQLite rule).
_RENEW = f"""
UPDATE locks SET expires_at = n.ms + ?::bigint FROM {_NOW}
WHERE key = ? AND owner = ? AND expires_at > n.ms
"""

_RELEASE = f"""
UPDATE locks SET owner = '', expires_at = 0, holder = '' FROM {_NOW}
WHERE key = ? AND owner = ? AND expires_at > n.ms
"""

_TAG = f"""
UPDATE locks SET holder = ? FROM {_NOW}
WHERE key = ? AND owner = ? AND expires_at > n.ms
"""

_CLAIM = f"""
INSERT INTO fire_claims AS c (job, due_at, node, claimed_at, expires_at)
SELECT ?::text, ?::bigint, ?::text, n.ms, n.ms + ?::bigint FROM {_NOW}
ON CONFLICT (job, due_at) DO UPDATE SET
    node = excluded.node, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at
WHERE c.expires_at <= excluded.claimed_at
"""

_UNCLAIM = "DELETE FROM fire_claims WHERE job = ? AND due_at = ? AND node = ?"

_PURGE_CLAIMS = f"DELETE FROM fire_claims WHERE expires_at <= (SELECT {SERVER_NOW_MS})"

# Conflicts with the ROW EXCLUSIVE lock of every acquire (and with other purges), not with reads.
_PURGE_LOCK = "LOCK TABLE locks IN SHARE ROW EXCLUSIVE MODE"

_PURGE_LOCKS = f"""
DELETE FROM locks
WHERE (owner = '' OR expires_at <= (SELECT {SERVER_NOW_MS}))
  AND fence < (SELECT MAX(fence) FROM locks)
"""

UNAVAILABLE = "postgresql_unavailable"


class PostgresLocks(Locks):
    """Lease rows in ``locks`` and fire claims in ``fire_claims`` of the PostgreSQL state.

    :param db: the open state database (not closed by :meth:`close`; its creator owns it).
    :param clock: the daemon's clock: paces background release retries; deliberately never used
        for expiry (see the module docstring).
    :param node: this process's node id, stored as the human-readable holder.
    """

    name = "postgresql"

    def __init__(
        self,
        db: PostgresDatabase,
        clock: Clock,
        node: str,
        *,
        on_acquire: AcquireObserver | None = None,
    ) -> None:
        super().__init__(on_acquire=on_acquire)
        self._db = db
        self._clock = clock
        self._node = node
        self._retries: set[asyncio.Task[object]] = set()

    async def _acquire(self, key: str, lease_ms: int) -> AcquireResult:
        return await self._acquire_token(key, lease_ms, secrets.token_hex(16))

    async def _acquire_token(self, key: str, lease_ms: int, token: str) -> AcquireResult:
        """Acquire with a caller-chosen token (``FallbackLocks`` uses one token in both)."""
        try:
            row = await self._db.fetchone(_ACQUIRE, (key, token, lease_ms, self._node))
        except asyncio.CancelledError:
            # The statement may have committed before the cancel reached the server.
            spawn_background(self._release_token(key, token))
            raise
        except ServiceUnavailable:
            return Unavailable(UNAVAILABLE)
        if row is not None:
            lease = Lease(
                key=key, token=token, fence=int(row[0]), backend=self.name, lease_ms=lease_ms
            )
            return Acquired(lease)
        return await self._holder(key)

    async def _holder(self, key: str) -> Held:
        # Informational only and read after the failed acquire, so it may already be stale.
        try:
            row = await self._db.fetchone("SELECT holder FROM locks WHERE key = ?", (key,))
        except ServiceUnavailable:
            return Held(None)
        return parse_holder(str(row[0]) if row is not None and row[0] else None)

    async def _write(self, sql: str, params: tuple[object, ...]) -> int:
        # An unreachable server raises DatabaseUnavailable, a ServiceUnavailable: as documented.
        return await self._db.execute(sql, params)

    async def renew(self, lease: Lease) -> bool:
        """See :meth:`Locks.renew`: extended by ``lease_ms`` from the server's now."""
        return await self._write(_RENEW, (lease.lease_ms, lease.key, lease.token)) == 1

    async def release(self, lease: Lease) -> bool:
        """See :meth:`Locks.release`; when the server cannot be reached, the release is also
        retried in the background until the lease would have expired anyway."""
        try:
            return await release_surely(self._release_token, lease)
        except ServiceUnavailable:
            task = spawn_background(self._release_later(lease))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            raise

    async def _release_later(self, lease: Lease) -> None:
        give_up_at = self._clock.monotonic() + lease.lease_ms / 1000
        for delay_s in backoff(0.25, 2.0):
            if self._clock.monotonic() + delay_s >= give_up_at:
                return  # the lease has expired by then: nothing left to free
            await self._clock.sleep(delay_s)
            try:
                await self._release_token(lease.key, lease.token)
            except ServiceUnavailable:
                continue
            return

    async def close(self) -> None:
        """See :meth:`Locks.close`; background release retries end here too."""
        for task in list(self._retries):
            task.cancel()
        await super().close()

    async def _release_token(self, key: str, token: str) -> bool:
        return await self._write(_RELEASE, (key, token)) == 1

    async def tag_run(self, lease: Lease, run_id: int) -> bool:
        """See :meth:`Locks.tag_run`: the ``holder`` column becomes ``<node> run <id>``."""
        holder = holder_text(self._node, run_id)
        return await self._write(_TAG, (holder, lease.key, lease.token)) == 1

    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        """See :meth:`Locks.claim_fire`: a primary-key upsert; a claim expired on the server's
        clock can be re-taken."""
        check_key(job)
        if ttl_ms < 1:
            raise ValueError(f"ttl_ms must be >= 1, got {ttl_ms}")
        return await self._write(_CLAIM, (job, due_ms, self._node, ttl_ms)) == 1

    async def release_fire(self, job: str, due_ms: int) -> bool:
        """See :meth:`Locks.release_fire`: delete the claim row if this node made it."""
        return await self._write(_UNCLAIM, (job, due_ms, self._node)) == 1

    async def purge_expired(self, now_ms: int) -> tuple[int, int]:
        """Housekeeping: delete expired fire claims and lock rows that are free or expired.

        Expiry is the server's clock here too, so ``now_ms`` (the host's, the signature housekeeping
        shares with SQLite) is not used: a host whose clock runs fast must not delete a live claim.
        The row with the greatest fence is always kept (see the module docstring).

        :returns: ``(fire_claims_deleted, lock_rows_deleted)``.
        :raises ServiceUnavailable: when the database cannot be reached.
        """
        async with self._db.transaction() as tx:
            claims = await tx.execute(_PURGE_CLAIMS)
            await tx.execute(_PURGE_LOCK)
            rows = await tx.execute(_PURGE_LOCKS)
        return claims, rows
