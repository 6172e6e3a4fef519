"""Component schemas of the OpenAPI document (:mod:`warmupd.openapi`): the bodies and answers of SPEC §9.

Limits come from :mod:`warmupd.schemas`, so the document and the validators cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from warmupd.schemas import (
    DATA_HASH_RE,
    MAX_POINTS,
    MAX_TERM_CHARS,
    MAX_TRIGGER_CONCURRENCY,
    MAX_TRIGGER_LIMIT,
    MAX_VIEWS,
    SLUG_RE,
)

Schema = dict[str, Any]

_REF = "#/components/schemas/"
_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_TIME: Schema = {"type": "string", "format": "date-time"}
_TIME_OR_NULL: Schema = {"type": ["string", "null"], "format": "date-time"}
_FRESHNESS: Schema = {"enum": ["fresh", "stale", "missing"]}
RUN_STATUS = ["running", "success", "failed", "skipped", "cancelled", "abandoned"]
_SHORT = {"type": "string", "maxLength": 64}
# What schemas.expect_str enforces: no control characters, and (unless empty is allowed) not blank.
_NO_CONTROL = r"^[^\x00-\x1f]*$"
_NON_BLANK = r"^[^\x00-\x1f]*[^\x00-\x1f\s][^\x00-\x1f]*$"


def ref(name: str) -> Schema:
    return {"$ref": _REF + name}


def _nullable(schema: Schema) -> Schema:
    """An optional field: ``null`` means absent (SPEC §17)."""
    return {**schema, "type": [schema["type"], "null"]}


def _obj(
    props: dict[str, Schema], required: list[str] | None = None, *, extra: bool = False
) -> Schema:
    schema: Schema = {"type": "object", "properties": props, "additionalProperties": extra}
    schema["required"] = list(props) if required is None else required
    return schema


SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": _STR,
            "message": _STR,
            "runId": {
                "type": ["integer", "string"],
                "description": "the holder's run (already_running, locked_elsewhere when known)",
            },
            "node": {"type": "string", "description": "locked_elsewhere: the holder's node id"},
        },
        ["error", "message"],
    ),
    "RunRecord": _obj(
        {
            "id": {"type": "integer", "minimum": 1},
            "job": _STR,
            "status": {"enum": RUN_STATUS},
            "reason": {"type": ["string", "null"]},
            "trigger": {"enum": ["schedule", "http", "cli", "on-demand", "startup"]},
            "node": _STR,
            "startedAt": _TIME,
            "finishedAt": _TIME_OR_NULL,
            "durationMs": {"type": ["integer", "null"], "minimum": 0},
            "processed": _COUNT,
            "skipped": _COUNT,
            "failed": _COUNT,
            "errors": {"type": "array", "items": _STR, "maxItems": 10},
            "metadata": {"type": "object"},
        }
    ),
    "RunList": _obj(
        {
            "runs": {"type": "array", "items": ref("RunRecord")},
            "nextBefore": {
                "type": ["integer", "null"],
                "description": "pass as `before` for the next page; null on the last page",
            },
        }
    ),
    "TriggerBody": _obj(
        {
            "limit": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_TRIGGER_LIMIT}),
            "concurrency": _nullable(
                {"type": "integer", "minimum": 1, "maximum": MAX_TRIGGER_CONCURRENCY}
            ),
        },
        [],
    ),
    "TriggerAccepted": _obj(
        {"runId": _INT, "job": _STR, "status": {"const": "running"}, "statusUrl": _STR}
    ),
    "Job": _obj(
        {
            "name": _STR,
            "schedule": _STR,
            "timezone": _STR,
            "enabled": {"type": "boolean"},
            "nextRunAt": _TIME_OR_NULL,
            "lastRun": {"anyOf": [ref("RunRecord"), {"type": "null"}]},
            "running": {"type": ["integer", "null"], "description": "the running run's id"},
            "paused": {"type": "boolean", "description": "scheduled fires are skipped (paused)"},
            "pausedAt": _TIME_OR_NULL,
        },
        ["name", "schedule", "timezone", "enabled", "nextRunAt", "lastRun", "running"],
        extra=True,
    ),
    "JobList": _obj({"jobs": {"type": "array", "items": ref("Job")}}),
    "JobPause": _obj(
        {
            "job": _STR,
            "paused": {"type": "boolean"},
            "pausedAt": {**_TIME_OR_NULL, "description": "when it was paused; null once resumed"},
        }
    ),
    "WarmupBody": _obj(
        {
            "slug": {"type": "string", "pattern": SLUG_RE.pattern},
            "dataHash": _nullable({"type": "string", "pattern": DATA_HASH_RE.pattern}),
        },
        ["slug"],
    ),
    "WarmupAccepted": _obj(
        {
            "slug": _STR,
            "dataHash": _STR,
            "status": {"enum": ["queued", "running"]},
            "statusUrl": _STR,
        },
        extra=True,
    ),
    "WarmupReady": _obj(
        {"slug": _STR, "dataHash": _STR, "status": {"const": "ready"}}, ["status"], extra=True
    ),
    "ComparisonStatus": _obj(
        {
            "slug": _STR,
            "dataHash": _STR,
            "warmup": {"enum": ["idle", "queued", "running", "failed", "ready"]},
            "parts": _obj(
                {"forecastA": _FRESHNESS, "forecastB": _FRESHNESS, "insights": _FRESHNESS}
            ),
            "lastError": {"type": ["string", "null"]},
            "updatedAt": _TIME_OR_NULL,
        },
        ["slug", "dataHash", "warmup", "parts", "updatedAt"],
    ),
    "Pack": _obj(
        {
            "slug": _STR,
            "terms": {"type": "array", "items": _STR, "minItems": 2, "maxItems": 2},
            "dataHash": _STR,
            "forecasts": _obj(
                {"termA": {"type": ["object", "null"]}, "termB": {"type": ["object", "null"]}}
            ),
            "insights": {"type": ["object", "null"]},
            "freshness": _FRESHNESS,
            "needsWarmup": {"type": "boolean"},
        },
        extra=True,
    ),
    "ComparisonBody": _obj(
        {
            "terms": {
                "type": "array",
                "items": {
                    "type": "string",
                    "maxLength": MAX_TERM_CHARS,
                    "pattern": _NON_BLANK,
                    "not": {"const": "date"},
                },
                "minItems": 2,
                "maxItems": 2,
                "uniqueItems": True,
            },
            "timeframe": {**_SHORT, "pattern": _NON_BLANK},
            "geo": _nullable({**_SHORT, "pattern": _NO_CONTROL}),
            "category": _nullable({**_SHORT, "pattern": _NO_CONTROL}),
            "series": {
                "type": "array",
                "maxItems": MAX_POINTS,
                "items": {
                    "type": "object",
                    "required": ["date"],
                    "properties": {"date": {"type": "string", "format": "date"}},
                    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100},
                    "description": (
                        "the date and exactly one value per term; dates strictly ascending "
                        "(not expressible here: the server answers 400 naming series[i])"
                    ),
                },
            },
        },
        ["terms", "timeframe", "series"],
    ),
    "Upserted": _obj({"slug": _STR, "dataHash": _STR}),
    "ViewsBody": _obj(
        {
            "count": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_VIEWS}),
            "at": _nullable(_TIME),
        },
        [],
    ),
    "Views": _obj({"slug": _STR, "viewCount": _COUNT, "lastVisited": _TIME_OR_NULL}, extra=True),
    "Status": _obj(
        {
            "version": _STR,
            "node": _STR,
            "startedAt": _TIME,
            "uptimeS": {"type": "number", "minimum": 0},
            "state": {"enum": ["ok", "degraded"]},
            "reasons": {
                "type": "array",
                "items": _STR,
                "description": "why the state is degraded (empty when ok): the database or Redis "
                "down (with the reason), a job overdue, a skewed clock",
            },
            "nodes": {
                "type": "array",
                "description": "the live nodes on this state, from the heartbeat table",
                "items": _obj(
                    {
                        "node": _STR,
                        "version": _STR,
                        "startedAt": _TIME,
                        "heartbeatAt": _TIME,
                        "skewMs": {
                            "type": ["integer", "null"],
                            "description": "its wall clock minus the database server's, "
                            "in ms (null on SQLite, whose clock is the host's: not applicable)",
                        },
                    }
                ),
            },
            "locks": _obj(
                {"backend": _STR, "redis": {"enum": ["up", "down", "unconfigured"]}}, extra=True
            ),
            "db": _obj(
                {
                    "engine": {"enum": ["sqlite", "postgresql"]},
                    "path": _STR,
                    "url": _STR,
                    "sizeBytes": _COUNT,
                    "schemaVersion": _INT,
                    "state": {"enum": ["up", "down"]},
                    "error": {
                        "type": "string",
                        "description": "while down: why, naming the database (never a password)",
                    },
                },
                required=["engine", "schemaVersion", "state"],
                extra=True,
            ),
            "jobs": {"type": "array"},
            "onDemand": _obj({"inFlight": _COUNT, "queued": _COUNT}, extra=True),
            "cache": _obj({"fresh": _COUNT, "stale": _COUNT, "expired": _COUNT}, extra=True),
            "restartRequired": {
                "type": "array",
                "items": _STR,
                "description": "config keys changed since start-up that apply only after a restart",
            },
        },
        extra=True,
    ),
    "Health": _obj({"status": {"const": "ok"}}),
    "Ready": _obj({"status": {"enum": ["ready", "not_ready"]}}, extra=True),
}
