"""Outside forms of internal records (SPEC §6, §9): camelCase keys, ISO-8601 ``Z`` timestamps."""

from __future__ import annotations

from typing import Any

from warmupd.clock import ms_to_iso
from warmupd.models import RunRecord


def run_url(run_id: int) -> str:
    """The ``statusUrl`` of a run."""
    return f"/api/jobs/runs/{run_id}"


def comparison_status_url(slug: str) -> str:
    """The ``statusUrl`` of a comparison's warmup."""
    return f"/api/comparison/{slug}/status"


def run_json(run: RunRecord) -> dict[str, Any]:
    """A run record as SPEC §6 lists it."""
    return {
        "id": run.id,
        "job": run.job,
        "status": str(run.status),
        "reason": run.reason,
        "trigger": str(run.trigger),
        "node": run.node,
        "startedAt": ms_to_iso(run.started_at_ms),
        "finishedAt": ms_to_iso(run.finished_at_ms),
        "durationMs": run.duration_ms,
        "processed": run.processed,
        "skipped": run.skipped,
        "failed": run.failed,
        "errors": list(run.errors),
        "metadata": dict(run.metadata),
    }


def trigger_accepted(run_id: int, job: str) -> dict[str, Any]:
    """The 202 body of a job trigger."""
    return {"runId": run_id, "job": job, "status": "running", "statusUrl": run_url(run_id)}


def warmup_answer(answer: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Status code and body of an on-demand warmup answer: 200 when ready, else 202 with a URL."""
    if answer.get("status") == "ready":
        return 200, answer
    return 202, {**answer, "statusUrl": comparison_status_url(str(answer["slug"]))}
