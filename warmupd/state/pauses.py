"""Paused jobs (SPEC §15): one row per paused job in the state database, so every process that shares
the state sees the same answer and a restart keeps it.

A paused job's scheduled fires are still claimed and recorded (``skipped``, reason ``paused``), so the
run history shows them; manual triggers are not affected.
"""

from __future__ import annotations

from warmupd.state import Database


class PauseStore:
    """The ``job_pauses`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def pause(self, job: str, now_ms: int, node: str) -> int:
        """Pause ``job``; a job already paused keeps its first pause time.

        :returns: when the job was paused (epoch ms).
        """
        row = await self.db.fetchone(
            """INSERT INTO job_pauses(job, paused_at, paused_by) VALUES (?, ?, ?)
               ON CONFLICT(job) DO UPDATE SET job = excluded.job RETURNING paused_at""",
            (job, now_ms, node),
        )
        assert row is not None  # INSERT … RETURNING always yields the row
        return int(row["paused_at"])

    async def resume(self, job: str) -> bool:
        """Resume ``job``; returns whether it was paused."""
        return await self.db.execute("DELETE FROM job_pauses WHERE job = ?", (job,)) > 0

    async def paused(self) -> dict[str, int]:
        """``{job: paused_at_ms}`` of every paused job."""
        rows = await self.db.fetchall("SELECT job, paused_at FROM job_pauses")
        return {r["job"]: r["paused_at"] for r in rows}

    async def is_paused(self, job: str) -> bool:
        """Whether ``job`` is paused now (asked at every scheduled fire)."""
        row = await self.db.fetchone("SELECT 1 FROM job_pauses WHERE job = ?", (job,))
        return row is not None
