"""What ``warmupd copy-state`` copies: every table and column by name, for one schema version.

**A migration that adds or changes a table updates this file**: each table of the schema is either in
:data:`TABLES` (with every column) or in :data:`NOT_COPIED` (with the reason), and
:data:`COPY_SCHEMA_VERSION` names the version they describe. ``copy-state`` refuses to run when it
differs from the schema version of this warmupd, and ``tests/test_copy_state.py`` compares the lists
with a freshly migrated database of each backend, so a forgotten update fails there first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Table:
    """One copied table: its natural key and every column, in the order they are copied."""

    name: str
    label: str
    key: str
    columns: tuple[str, ...]
    same_row: tuple[str, ...] = ()
    """Columns a row never changes: a key conflict with other values here is another row."""
    only_if_later: str | None = None
    """When set, a target row is replaced only when the source's value of this column is later."""


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


COPY_SCHEMA_VERSION = 4
"""The schema version :data:`TABLES` and :data:`NOT_COPIED` describe (v4 added columns to ``nodes``
only, which is not copied)."""

TABLES: tuple[Table, ...] = (
    # First: the one table that can refuse halfway (a foreign run under a copied id); the rest is
    # then not yet touched.
    Table(
        name="job_runs",
        label="runs",
        key="id",
        columns=_names(
            "id job status reason trigger node started_at finished_at duration_ms processed skipped failed errors metadata"
        ),
        same_row=("job", "node", "started_at"),
    ),
    Table(
        name="comparisons",
        label="comparisons",
        key="slug",
        columns=_names(
            "slug term_a term_b timeframe geo category series points data_hash view_count last_visited created_at updated_at"
        ),
    ),
    Table(
        name="cache_entries",
        label="cache entries",
        key="key",
        columns=_names(
            "key kind slug data_hash version value created_at fresh_until stale_until fence_key fence"
        ),
    ),
    # Which fires already ran: without it the target would not know a fire missed during the move
    # (the misfire rules of §4 need the last fire), and it must never move backwards (a fire that
    # ran would run again).
    Table(
        name="schedule_state",
        label="schedule state",
        key="job",
        columns=("job", "last_fire_at", "next_fire_at"),
        only_if_later="last_fire_at",
    ),
    # An operator's pause is a decision about the job, not about the host: it moves with the state.
    Table(
        name="job_pauses",
        label="pauses",
        key="job",
        columns=("job", "paused_at", "paused_by"),
    ),
)

NOT_COPIED: dict[str, str] = {
    "locks": "leases of the processes on the source; copied, they would hold jobs on the target",
    "fire_claims": "claims of fires by the source's processes; the schedule state carries the fires",
    "nodes": "heartbeats of the source's processes; the target's daemons register themselves",
    "warmups": "the on-demand status clients poll while a warmup runs; transient, purged anyway",
    "state_version": "a change counter; the target's triggers bump it with every row copied",
    "warmupd_schema": "the PostgreSQL backend's schema version (SQLite: PRAGMA user_version)",
    "sqlite_sequence": "SQLite's own AUTOINCREMENT bookkeeping",
}
"""Tables of the schema that are deliberately left alone, and why."""
