"""The OpenAPI 3.1 document of the HTTP API (SPEC §9), built from plain Python data.

Served at ``GET /api/openapi.json``. Every response of every operation is listed with its schema and
headers (``X-Request-Id`` everywhere, ``Retry-After`` on 429, ``Location`` on 202), so that a
conformance run (schemathesis) can check what the server really answers against it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from warmupd import __version__
from warmupd.metrics import CONTENT_TYPE
from warmupd.schemas import (
    DATA_HASH_RE,
    JOB_NAME_RE,
    MAX_POINTS,
    MAX_RUNS_LIMIT,
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
_RUN_STATUS = ["running", "success", "failed", "skipped", "cancelled", "abandoned"]
_SHORT = {"type": "string", "maxLength": 64}
# What schemas.expect_str enforces: no control characters, and (unless empty is allowed) not blank.
_NO_CONTROL = r"^[^\x00-\x1f]*$"
_NON_BLANK = r"^[^\x00-\x1f]*[^\x00-\x1f\s][^\x00-\x1f]*$"


def _ref(name: str) -> Schema:
    return {"$ref": _REF + name}


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
            "runId": {"type": ["integer", "string"], "description": "the local holder's run"},
        },
        ["error", "message"],
    ),
    "RunRecord": _obj(
        {
            "id": {"type": "integer", "minimum": 1},
            "job": _STR,
            "status": {"enum": _RUN_STATUS},
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
            "runs": {"type": "array", "items": _ref("RunRecord")},
            "nextBefore": {
                "type": ["integer", "null"],
                "description": "pass as `before` for the next page; null on the last page",
            },
        }
    ),
    "TriggerBody": _obj(
        {
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_TRIGGER_LIMIT},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": MAX_TRIGGER_CONCURRENCY},
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
            "lastRun": {"anyOf": [_ref("RunRecord"), {"type": "null"}]},
            "running": {"type": ["integer", "null"], "description": "the running run's id"},
        },
        extra=True,
    ),
    "JobList": _obj({"jobs": {"type": "array", "items": _ref("Job")}}),
    "WarmupBody": _obj(
        {
            "slug": {"type": "string", "pattern": SLUG_RE.pattern},
            "dataHash": {"type": "string", "pattern": DATA_HASH_RE.pattern},
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
            "geo": {**_SHORT, "pattern": _NO_CONTROL},
            "category": {**_SHORT, "pattern": _NO_CONTROL},
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
        {"count": {"type": "integer", "minimum": 1, "maximum": MAX_VIEWS}, "at": _TIME}, []
    ),
    "Views": _obj({"slug": _STR, "viewCount": _COUNT, "lastVisited": _TIME_OR_NULL}, extra=True),
    "Status": _obj(
        {
            "version": _STR,
            "node": _STR,
            "startedAt": _TIME,
            "uptimeS": {"type": "number", "minimum": 0},
            "state": {"enum": ["ok", "degraded"]},
            "locks": _obj(
                {"backend": _STR, "redis": {"enum": ["up", "down", "unconfigured"]}}, extra=True
            ),
            "db": _obj({"path": _STR, "sizeBytes": _COUNT, "schemaVersion": _INT}, extra=True),
            "jobs": {"type": "array"},
            "onDemand": _obj({"inFlight": _COUNT, "queued": _COUNT}, extra=True),
            "cache": _obj({"fresh": _COUNT, "stale": _COUNT, "expired": _COUNT}, extra=True),
        },
        extra=True,
    ),
    "Health": _obj({"status": {"const": "ok"}}),
    "Ready": _obj({"status": {"enum": ["ready", "not_ready"]}}, extra=True),
}

_ERROR_TEXT = {
    400: "invalid_request: the message names the field",
    401: "unauthorized: a secret is missing or wrong",
    404: "not_found",
    409: "stale_data_hash: the given dataHash is not the current one",
    413: "payload_too_large: the body exceeds http.max_body_bytes",
    415: "unsupported_media_type: the body is not application/json",
    429: "already_running / locked_elsewhere / queue_full; retry after Retry-After seconds",
    500: "internal: no stack trace in the body",
    503: "secret_not_configured: the endpoint's secret is unset (fail closed)",
}

_REQUEST_ID = {"$ref": "#/components/headers/XRequestId"}


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": {"X-Request-Id": _REQUEST_ID, **(headers or {})},
        "content": {"application/json": {"schema": schema}},
    }


def _error(code: int) -> Schema:
    headers = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}} if code == 429 else None
    return _json(_ref("Error"), _ERROR_TEXT[code], headers)


_JOB_AUTH: list[dict[str, list[str]]] = [{"jobSecret": []}, {"bearer": []}]
_WARMUP_AUTH: list[dict[str, list[str]]] = [{"warmupSecret": []}, {"jobSecret": []}, {"bearer": []}]
_READ_AUTH: list[dict[str, list[str]]] = [
    {},
    {"warmupSecret": []},
    {"jobSecret": []},
    {"bearer": []},
]


def _op(
    summary: str,
    ok: dict[int, Schema],
    errors: list[int],
    *,
    security: list[dict[str, list[str]]] | None = None,
    params: list[Schema] | None = None,
    body: str | None = None,
    body_required: bool = True,
) -> Schema:
    responses: dict[str, Schema] = {str(code): resp for code, resp in ok.items()}
    codes = set(errors) | {500}
    if body is not None:
        codes |= {400, 413, 415}
    if security is not None:
        codes |= {401, 503}
    for code in sorted(codes):
        responses[str(code)] = _error(code)
    op: Schema = {"summary": summary, "responses": responses}
    op["security"] = security if security is not None else []
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


def _path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_param(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_SLUG = _path_param("slug", {"type": "string", "pattern": SLUG_RE.pattern})


def _paths() -> dict[str, Schema]:
    ok = functools.partial(_json)
    return {
        "/healthz": {"get": _op("Liveness", {200: ok(_ref("Health"), "the loop runs")}, [])},
        "/readyz": {
            "get": _op(
                "Readiness: the DB is open and locks are usable",
                {
                    200: ok(_ref("Ready"), "ready"),
                    503: ok(_ref("Ready"), "not ready; the body says why"),
                },
                [],
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "security": [],
                "responses": {
                    "200": {
                        "description": "metrics",
                        "headers": {"X-Request-Id": _REQUEST_ID},
                        "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
                    },
                    "500": _error(500),
                },
            }
        },
        "/api/openapi.json": {
            "get": _op("This document", {200: ok({"type": "object"}, "OpenAPI 3.1")}, [])
        },
        "/api/status": {
            "get": _op(
                "Daemon status", {200: ok(_ref("Status"), "status")}, [], security=_READ_AUTH
            )
        },
        "/api/jobs": {
            "get": _op("Every job", {200: ok(_ref("JobList"), "jobs")}, [], security=_READ_AUTH)
        },
        "/api/jobs/runs": {
            "get": _op(
                "Run records, newest first",
                {200: ok(_ref("RunList"), "runs")},
                [400],
                security=_READ_AUTH,
                params=[
                    _query_param(
                        "job", {"type": "string", "pattern": JOB_NAME_RE.pattern}, "only this job"
                    ),
                    _query_param("status", {"enum": _RUN_STATUS}, "only runs in this status"),
                    _query_param(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_RUNS_LIMIT, "default": 50},
                        "page size",
                    ),
                    _query_param(
                        "before",
                        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                        "only runs with a smaller id (paging)",
                    ),
                ],
            )
        },
        "/api/jobs/runs/{id}": {
            "get": _op(
                "One run record",
                {200: ok(_ref("RunRecord"), "the run")},
                [400, 404],
                security=_READ_AUTH,
                params=[_path_param("id", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1})],
            )
        },
        "/api/jobs/{job}": {
            "post": _op(
                "Trigger a job run",
                {
                    202: ok(
                        _ref("TriggerAccepted"),
                        "started",
                        {"Location": {"$ref": "#/components/headers/Location"}},
                    ),
                    200: ok(_ref("RunRecord"), "with ?wait=true: the finished run"),
                },
                [404, 429],
                security=_JOB_AUTH,
                params=[
                    _path_param("job", {"type": "string", "pattern": JOB_NAME_RE.pattern}),
                    _query_param("wait", {"type": "boolean"}, "answer when the run has finished"),
                ],
                body="TriggerBody",
                body_required=False,
            )
        },
        "/api/comparison/warmup": {
            "post": _op(
                "Request an on-demand warmup (never waits for compute)",
                {
                    202: ok(_ref("WarmupAccepted"), "queued or running"),
                    200: ok(_ref("WarmupReady"), "everything is already fresh"),
                },
                [404, 409, 429],
                security=_WARMUP_AUTH,
                body="WarmupBody",
            )
        },
        "/api/comparison/{slug}/status": {
            "get": _op(
                "Warmup state of a comparison",
                {200: ok(_ref("ComparisonStatus"), "state")},
                [400, 404],
                security=_READ_AUTH,
                params=[_SLUG],
            )
        },
        "/api/comparison/{slug}": {
            "get": _op(
                "The premium pack",
                {200: ok(_ref("Pack"), "the pack; needsWarmup when a part is missing")},
                [400, 404],
                security=_READ_AUTH,
                params=[_SLUG],
            )
        },
        "/api/comparisons/{slug}": {
            "put": _op(
                "Insert or update a comparison",
                {201: ok(_ref("Upserted"), "created"), 200: ok(_ref("Upserted"), "updated")},
                [],
                security=_JOB_AUTH,
                params=[_SLUG],
                body="ComparisonBody",
            )
        },
        "/api/comparisons/{slug}/views": {
            "post": _op(
                "Add views",
                {200: ok(_ref("Views"), "the new counts")},
                [404],
                security=_JOB_AUTH,
                params=[_SLUG],
                body="ViewsBody",
                body_required=False,
            )
        },
    }


@functools.cache
def _document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "warmupd",
            "version": __version__,
            "description": "Cache-warmup daemon API. Errors are {error, message} envelopes.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "headers": {
                "XRequestId": {
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                },
                "RetryAfter": {
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                "Location": {"required": True, "schema": {"type": "string"}},
            },
            "securitySchemes": {
                "jobSecret": {"type": "apiKey", "in": "header", "name": "X-Job-Secret"},
                "warmupSecret": {"type": "apiKey", "in": "header", "name": "X-Warmup-Secret"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_document() -> Schema:
    """The document (a fresh copy: callers may mutate it)."""
    return copy.deepcopy(_document())
