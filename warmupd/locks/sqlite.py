"""SQLite lease rows: locks for every warmupd process sharing one state file on one host (SPEC §5).

Deviations from and details of the :class:`~warmupd.locks.Locks` contract:

- **Atomicity.** Acquire is one autocommit ``INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING``
  statement: SQLite takes the write lock before the statement reads, so "is it free?" and "take it"
  cannot interleave with another process. Renew and release are single ``UPDATE``s conditional on
  the owner token. No deferred transaction ever upgrades to a writer.
- **Clock.** Expiry compares wall milliseconds from the injected clock, the one clock every process
  on the host shares. A wall-clock step forward larger than the remaining lease lets another process
  take the lock early (see docs/LOCKS.md); holders are still bounded by their monotonic deadline.
- **Fences are never reset.** Release clears the owner and keeps the row. The first acquisition of a
  key that has no row starts from the greatest fence of any row + 1, and :meth:`purge_expired` never
  deletes the row holding the greatest fence; together that keeps every key's fence strictly
  increasing even when housekeeping deletes a key's row and the key is later used again.
- **Busy.** ``SQLITE_BUSY`` after ``busy_timeout`` ("database is locked") and a closed database give
  ``Unavailable`` from acquire and :class:`~warmupd.errors.ServiceUnavailable` from the others.
"""

from __future__ import annotations

import asyncio
import secrets

from warmupd.clock import Clock
from warmupd.errors import ServiceUnavailable
from warmupd.locks import (
    AcquireObserver,
    Locks,
    check_key,
    release_surely,
    spawn_background,
)
from warmupd.locks.holder import holder_text, parse_holder
from warmupd.models import Acquired, AcquireResult, Held, Lease, Unavailable
from warmupd.state.sqlite import DatabaseError, SqliteDatabase, is_busy_error

_ACQUIRE = """
INSERT INTO locks(key, owner, fence, acquired_at, expires_at, holder)
VALUES (:key, :owner, (SELECT COALESCE(MAX(fence), 0) + 1 FROM locks), :now, :expires, :holder)
ON CONFLICT(key) DO UPDATE SET
    owner = excluded.owner,
    fence = locks.fence + 1,
    acquired_at = excluded.acquired_at,
    expires_at = excluded.expires_at,
    holder = excluded.holder
WHERE locks.owner = '' OR locks.expires_at <= :now
RETURNING fence
"""

# `expires_at > :now`: an expired lease is lost even when nobody took it yet, the same rule as
# Redis, where the key is gone once its PX ran out.
_RENEW = """
UPDATE locks SET expires_at = :expires
WHERE key = :key AND owner = :owner AND expires_at > :now
"""

_RELEASE = """
UPDATE locks SET owner = '', expires_at = 0, holder = ''
WHERE key = :key AND owner = :owner AND expires_at > :now
"""

_TAG = """
UPDATE locks SET holder = :holder
WHERE key = :key AND owner = :owner AND expires_at > :now
"""

_UNCLAIM = "DELETE FROM fire_claims WHERE job = :job AND due_at = :due AND node = :node"

_CLAIM = """
INSERT INTO fire_claims(job, due_at, node, claimed_at, expires_at)
VALUES (:job, :due, :node, :now, :expires)
ON CONFLICT(job, due_at) DO UPDATE SET
    node = excluded.node, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at
WHERE fire_claims.expires_at <= :now
"""


class SqliteLocks(Locks):
    """Lease rows in the ``locks`` table and fire claims in ``fire_claims`` of the state database.

    :param db: the open state database (not closed by :meth:`close`; its creator owns it).
    :param clock: wall milliseconds for expiry.
    :param node: this process's node id, stored as the human-readable holder.
    """

    name = "sqlite"

    def __init__(
        self,
        db: SqliteDatabase,
        clock: Clock,
        node: str,
        *,
        on_acquire: AcquireObserver | None = None,
    ) -> None:
        super().__init__(on_acquire=on_acquire)
        self._db = db
        self._clock = clock
        self._node = node

    async def _acquire(self, key: str, lease_ms: int) -> AcquireResult:
        return await self._acquire_token(key, lease_ms, secrets.token_hex(16))

    async def _acquire_token(self, key: str, lease_ms: int, token: str) -> AcquireResult:
        """Acquire with a caller-chosen token (``FallbackLocks`` uses one token in both)."""
        now = self._clock.wall_ms()
        params = {
            "key": key,
            "owner": token,
            "now": now,
            "expires": now + lease_ms,
            "holder": self._node,
        }
        try:
            row = await self._db.fetchone(_ACQUIRE, params)
        except asyncio.CancelledError:
            # The statement may still commit in aiosqlite's thread; free the lock if it did.
            spawn_background(self._release_token(key, token))
            raise
        except ServiceUnavailable:
            return Unavailable("sqlite_closed")
        except DatabaseError as exc:
            if is_busy_error(exc):
                return Unavailable("sqlite_busy")
            raise
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
        except DatabaseError as exc:
            if is_busy_error(exc):
                return Held(None)
            raise
        return parse_holder(str(row[0]) if row is not None and row[0] else None)

    async def tag_run(self, lease: Lease, run_id: int) -> bool:
        """See :meth:`Locks.tag_run`: the ``holder`` column becomes ``<node> run <id>``."""
        params = {
            "key": lease.key,
            "owner": lease.token,
            "now": self._clock.wall_ms(),
            "holder": holder_text(self._node, run_id),
        }
        return await self._write(_TAG, params) == 1

    async def _write(self, sql: str, params: dict[str, object]) -> int:
        try:
            return await self._db.execute(sql, params)
        except DatabaseError as exc:
            if is_busy_error(exc):
                raise ServiceUnavailable("the lock database is busy") from exc
            raise

    async def renew(self, lease: Lease) -> bool:
        """See :meth:`Locks.renew`."""
        now = self._clock.wall_ms()
        params = {
            "key": lease.key,
            "owner": lease.token,
            "now": now,
            "expires": now + lease.lease_ms,
        }
        return await self._write(_RENEW, params) == 1

    async def release(self, lease: Lease) -> bool:
        """See :meth:`Locks.release`."""
        return await release_surely(self._release_token, lease)

    async def _release_token(self, key: str, token: str) -> bool:
        params = {"key": key, "owner": token, "now": self._clock.wall_ms()}
        return await self._write(_RELEASE, params) == 1

    async def release_fire(self, job: str, due_ms: int) -> bool:
        """See :meth:`Locks.release_fire`: delete the claim row if this node made it."""
        params = {"job": job, "due": due_ms, "node": self._node}
        return await self._write(_UNCLAIM, params) == 1

    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        """See :meth:`Locks.claim_fire`: a primary-key insert; an expired claim can be re-taken."""
        check_key(job)
        if ttl_ms < 1:
            raise ValueError(f"ttl_ms must be >= 1, got {ttl_ms}")
        now = self._clock.wall_ms()
        params = {
            "job": job,
            "due": due_ms,
            "node": self._node,
            "now": now,
            "expires": now + ttl_ms,
        }
        return await self._write(_CLAIM, params) == 1

    async def purge_expired(self, now_ms: int) -> tuple[int, int]:
        """Housekeeping: delete expired fire claims and lock rows that are free or expired.

        The lock row with the greatest fence is always kept (new rows start above it), so no key's
        fence can go back. A deleted holder's renew and release simply answer False.

        :returns: ``(fire_claims_deleted, lock_rows_deleted)``.
        :raises ServiceUnavailable: when the database is busy.
        """
        try:
            async with self._db.transaction() as tx:
                claims = await tx.execute(
                    "DELETE FROM fire_claims WHERE expires_at <= ?", (now_ms,)
                )
                rows = await tx.execute(
                    """DELETE FROM locks
                       WHERE (owner = '' OR expires_at <= :now)
                         AND fence < (SELECT MAX(fence) FROM locks)""",
                    {"now": now_ms},
                )
        except DatabaseError as exc:
            if is_busy_error(exc):
                raise ServiceUnavailable("the lock database is busy") from exc
            raise
        return claims, rows
