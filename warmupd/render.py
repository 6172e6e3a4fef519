"""Outside forms of internal records (SPEC §6, §9): camelCase keys, ISO-8601 ``Z`` timestamps.

Also the pure parts of the HTTP edge's answers: the error envelope, request ids, and the encoded
warmup answers it keeps.
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import Any, TypeVar

from warmupd.clock import ms_to_iso
from warmupd.errors import Busy, LockedElsewhere, WarmupdError
from warmupd.models import RunRecord

K = TypeVar("K")
V = TypeVar("V")


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


def error_body(code: str, message: str) -> dict[str, Any]:
    """The error envelope."""
    return {"error": code, "message": message}


def error_answer(exc: WarmupdError) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """Status, envelope and extra headers of a deliberate error (``Retry-After`` of a 429)."""
    body = error_body(exc.code, exc.message)
    headers = None
    if isinstance(exc, Busy):
        headers = {"Retry-After": str(exc.retry_after_s)}
        if exc.run_id is not None:
            body["runId"] = exc.run_id
        if isinstance(exc, LockedElsewhere) and exc.node is not None:
            body["node"] = exc.node
    return exc.http_status, body, headers


def http_error_body(status: int, reason: str, method: str, allow: str | None) -> dict[str, Any]:
    """The envelope of an HTTP-level error (no route, method not allowed, body too large)."""
    if status == 404:
        return error_body("not_found", "no route matches this path")
    if status == 405:
        return error_body(
            "method_not_allowed", f"{method} is not allowed here (allowed: {allow or ''})"
        )
    if status == 413:
        return error_body("payload_too_large", "the request body is too large")
    return error_body("invalid_request" if status < 500 else "internal", reason)


_REQUEST_ID_PREFIX = secrets.token_hex(4)
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits, unique per process: a random prefix drawn at start and a counter.

    A request id needs to be unique, not unguessable; the counter spares every request a
    ``getrandom`` system call (bench P3/P7).
    """
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers) & 0xFFFFFFFF:08x}"


class Memo(dict[K, V]):
    """A bounded memo of a pure function's results: at most ``size`` entries, oldest out first.

    A ``dict`` (``get`` is the dict's own, the cheapest lookup there is); add only with :meth:`put`.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a memo holds at least one entry")
        super().__init__()
        self.size = size

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key``, dropping the oldest entry when full."""
        if key not in self and len(self) >= self.size:
            del self[next(iter(self))]
        self[key] = value


_ANSWERS: Memo[tuple[tuple[str, str], ...], tuple[int, bytes]] = Memo(4096)


def warmup_answer_bytes(answer: dict[str, Any]) -> tuple[int, bytes]:
    """:func:`warmup_answer`, encoded: the same answer (same keys, same strings) is encoded once.

    Kept only for answers of strings alone, so that equal keys mean equal JSON (``1 == True``
    would not); at most 4,096 of them (one per comparison and state).
    """
    key = tuple(answer.items())
    found = _ANSWERS.get(key)
    if found is None:
        code, body = warmup_answer(answer)
        found = (code, json.dumps(body).encode())
        if all(type(value) is str for value in answer.values()):
            _ANSWERS.put(key, found)
    return found
