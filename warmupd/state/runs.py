"""The job log (``job_runs``) and the node registry that tells live owners from dead ones."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from warmupd.models import RunRecord, RunStatus, Trigger
from warmupd.state import Database, Row

MAX_ERRORS = 10


def _record(row: Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        job=row["job"],
        status=RunStatus(row["status"]),
        reason=row["reason"],
        trigger=Trigger(row["trigger"]),
        node=row["node"],
        started_at_ms=row["started_at"],
        finished_at_ms=row["finished_at"],
        duration_ms=row["duration_ms"],
        processed=row["processed"],
        skipped=row["skipped"],
        failed=row["failed"],
        errors=tuple(json.loads(row["errors"])),
        metadata=json.loads(row["metadata"]),
    )


class RunStore:
    """Create, finish, query and purge run records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(
        self, job: str, trigger: Trigger, node: str, now_ms: int, metadata: Mapping[str, Any]
    ) -> int:
        """Insert a ``running`` record; returns its id."""
        row = await self.db.fetchone(
            """INSERT INTO job_runs(job, status, trigger, node, started_at, metadata)
               VALUES (?, 'running', ?, ?, ?, ?) RETURNING id""",
            (job, trigger.value, node, now_ms, json.dumps(dict(metadata))),
        )
        assert row is not None  # INSERT … RETURNING always yields the row
        return int(row["id"])

    async def update_metadata(self, run_id: int, metadata: Mapping[str, Any]) -> None:
        """Replace the metadata of a run (e.g. once the lock and selection are known)."""
        await self.db.execute(
            "UPDATE job_runs SET metadata = ? WHERE id = ?", (json.dumps(dict(metadata)), run_id)
        )

    async def finish(
        self,
        run_id: int,
        *,
        status: RunStatus,
        now_ms: int,
        reason: str | None = None,
        processed: int = 0,
        skipped: int = 0,
        failed: int = 0,
        errors: list[str] | tuple[str, ...] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Close a run with its final status and counts; returns the record."""
        row = await self.db.fetchone(
            f"""UPDATE job_runs SET status = ?, reason = ?, finished_at = ?,
                   duration_ms = {self.db.dialect.greatest}(0, ? - started_at), processed = ?, skipped = ?, failed = ?,
                   errors = ?, metadata = coalesce(?, metadata)
               WHERE id = ? RETURNING *""",
            (
                status.value,
                reason,
                now_ms,
                now_ms,
                processed,
                skipped,
                failed,
                json.dumps(list(errors)[:MAX_ERRORS]),
                json.dumps(dict(metadata)) if metadata is not None else None,
                run_id,
            ),
        )
        if row is None:
            raise LookupError(f"run {run_id} does not exist")
        return _record(row)

    async def record(
        self,
        job: str,
        *,
        status: RunStatus,
        trigger: Trigger,
        node: str,
        now_ms: int,
        reason: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Insert an already finished record (a ``skipped`` run that never started)."""
        row = await self.db.fetchone(
            """INSERT INTO job_runs(job, status, reason, trigger, node, started_at, finished_at,
                   duration_ms, metadata)
               VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) RETURNING *""",
            (
                job,
                status.value,
                reason,
                trigger.value,
                node,
                now_ms,
                now_ms,
                json.dumps(dict(metadata or {})),
            ),
        )
        assert row is not None
        return _record(row)

    async def get(self, run_id: int) -> RunRecord | None:
        """One run, or None."""
        row = await self.db.fetchone("SELECT * FROM job_runs WHERE id = ?", (run_id,))
        return _record(row) if row else None

    async def list_runs(
        self,
        *,
        job: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, optionally filtered, paged by ``before`` (a run id)."""
        where, params = [], []
        for clause, value in (("job = ?", job), ("status = ?", status), ("id < ?", before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM job_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.db.fetchall(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_record(r) for r in rows]

    async def since(self, started_ms: int, limit: int) -> list[RunRecord]:
        """The newest ``limit`` runs that started at or after ``started_ms``, newest first, as
        spans: without their errors and metadata (the timeline draws hundreds; decoding those
        JSON columns was most of its cost).

        Walks ``job_runs_started`` backwards from now, so the cost is the rows returned, not the log.
        """
        rows = await self.db.fetchall(
            """SELECT id, job, status, reason, trigger, node, started_at, finished_at, duration_ms
               FROM job_runs WHERE started_at >= ? ORDER BY started_at DESC LIMIT ?""",
            (started_ms, limit),
        )
        return [
            RunRecord(
                id=r[0],
                job=r[1],
                status=RunStatus(r[2]),
                reason=r[3],
                trigger=Trigger(r[4]),
                node=r[5],
                started_at_ms=r[6],
                finished_at_ms=r[7],
                duration_ms=r[8],
            )
            for r in rows
        ]

    async def last_finished(self, job: str) -> RunRecord | None:
        """The newest run of ``job`` that is not running."""
        row = await self.db.fetchone(
            """SELECT * FROM job_runs WHERE job = ? AND status <> 'running'
               ORDER BY id DESC LIMIT 1""",
            (job,),
        )
        return _record(row) if row else None

    async def last_success_ms(self, job: str) -> int | None:
        """When the newest successful run of ``job`` finished."""
        row = await self.db.fetchone(
            """SELECT finished_at FROM job_runs WHERE job = ? AND status = 'success'
               ORDER BY id DESC LIMIT 1""",
            (job,),
        )
        return row["finished_at"] if row else None

    async def running(self) -> list[RunRecord]:
        """Every run recorded as running (by any process)."""
        rows = await self.db.fetchall("SELECT * FROM job_runs WHERE status = 'running'")
        return [_record(r) for r in rows]

    async def mark_abandoned(self, run_ids: list[int], now_ms: int) -> int:
        """Mark runs whose process died as ``abandoned``."""
        count = 0
        for run_id in run_ids:
            count += await self.db.execute(
                f"""UPDATE job_runs SET status = 'abandoned', reason = 'owner_died',
                       finished_at = ?, duration_ms = {self.db.dialect.greatest}(0, ? - started_at)
                   WHERE id = ? AND status = 'running'""",
                (now_ms, now_ms, run_id),
            )
        return count

    async def purge(self, older_than_ms: int) -> int:
        """Delete finished runs that started before ``older_than_ms``."""
        return await self.db.execute(
            "DELETE FROM job_runs WHERE started_at < ? AND status <> 'running'", (older_than_ms,)
        )


# --------------------------------------------------------------------------- nodes


def make_node_id(token: str) -> str:
    """SPEC §1: ``<hostname>:<pid>:<random 6 hex>`` (``token`` is the random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def node_is_dead_locally(node: str) -> bool:
    """True when ``node`` ran on this host and its pid no longer exists."""
    host, _, rest = node.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class NodeInfo:
    """One process's row in the heartbeat table."""

    node: str
    version: str
    started_at_ms: int
    heartbeat_at_ms: int
    skew_ms: int | None
    """Its wall clock minus the database's at its last heartbeat; None until measured."""


class NodeStore:
    """Heartbeats of the processes sharing this state (a SQLite file, or a fleet's database).

    **Whose clock.** On PostgreSQL every heartbeat instant, and every "now" an age is measured
    from, is the database server's clock (``clock_timestamp()``), never a host's: hosts with skewed
    clocks then agree on which node is alive, as they agree on lease expiry (SPEC §14) — a node
    whose clock is minutes slow is not taken for dead, and one whose clock is fast is not kept alive
    after it died. On SQLite the file is shared by the processes of one host, and the ``now_ms``
    the caller passes (the injected clock) is that one clock. Callers therefore pass their ``now_ms``
    and an *age*, never a cut-off instant.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def heartbeat(
        self, node: str, now_ms: int, *, version: str = "", skew_ms: int | None = None
    ) -> None:
        """Record that ``node`` (running warmupd ``version``) is alive now, with its clock skew."""
        now, at = self.db.dialect.now(now_ms)
        await self.db.execute(
            f"""INSERT INTO nodes(node, started_at, heartbeat_at, version, skew_ms)
               VALUES (?, {now}, {now}, ?, ?)
               ON CONFLICT(node) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                   version = excluded.version, skew_ms = excluded.skew_ms""",
            (node, *at, *at, version, skew_ms),
        )

    async def database_ms(self) -> int | None:
        """The database server's wall clock now; None when it has none of its own (SQLite)."""
        if self.db.dialect.clock_ms is None:
            return None
        row = await self.db.fetchone(f"SELECT {self.db.dialect.clock_ms}")
        assert row is not None
        return int(row[0])

    async def live(self, now_ms: int, max_age_ms: int) -> list[NodeInfo]:
        """Nodes whose last heartbeat is at most ``max_age_ms`` old, oldest first."""
        now, at = self.db.dialect.now(now_ms)
        rows = await self.db.fetchall(
            f"""SELECT node, version, started_at, heartbeat_at, skew_ms FROM nodes
               WHERE heartbeat_at >= {now} - ? ORDER BY started_at, node""",
            (*at, max_age_ms),
        )
        return [NodeInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def remove(self, node: str) -> None:
        """Forget ``node`` (clean shutdown)."""
        await self.db.execute("DELETE FROM nodes WHERE node = ?", (node,))

    async def alive(self, now_ms: int, max_age_ms: int) -> set[str]:
        """Nodes whose last heartbeat is at most ``max_age_ms`` old."""
        now, at = self.db.dialect.now(now_ms)
        rows = await self.db.fetchall(
            f"SELECT node FROM nodes WHERE heartbeat_at >= {now} - ?", (*at, max_age_ms)
        )
        return {r["node"] for r in rows}

    async def purge(self, now_ms: int, max_age_ms: int) -> int:
        """Delete nodes whose last heartbeat is more than ``max_age_ms`` old."""
        now, at = self.db.dialect.now(now_ms)
        return await self.db.execute(
            f"DELETE FROM nodes WHERE heartbeat_at < {now} - ?", (*at, max_age_ms)
        )


async def recover_abandoned(
    runs: RunStore, nodes: NodeStore, *, self_node: str, now_ms: int, stale_after_ms: int
) -> list[int]:
    """Mark ``running`` runs whose owner is gone as ``abandoned`` (SPEC §6, §11).

    An owner is gone when it ran on this host and its pid is dead, or when its heartbeat is older than
    ``stale_after_ms`` (it ran elsewhere, or its pid was reused). Runs of ``self_node`` are never
    touched. Returns the ids marked.
    """
    alive = await nodes.alive(now_ms, stale_after_ms)
    orphans = [
        r.id
        for r in await runs.running()
        if r.node != self_node and (node_is_dead_locally(r.node) or r.node not in alive)
    ]
    await runs.mark_abandoned(orphans, now_ms)
    return orphans
