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
from warmupd.openapi_schemas import RUN_STATUS, SCHEMAS, Schema, ref
from warmupd.schemas import JOB_NAME_RE, MAX_RUNS_LIMIT, SLUG_RE

_ERROR_TEXT = {
    400: "invalid_request: the message names the field",
    401: "unauthorized: a secret is missing or wrong",
    404: "not_found",
    409: "stale_data_hash: the given dataHash is not the current one",
    413: "payload_too_large: the body exceeds http.max_body_bytes",
    415: "unsupported_media_type: the body is not application/json",
    429: "already_running / locked_elsewhere / queue_full; retry after Retry-After seconds",
    500: "internal: no stack trace in the body",
    503: (
        "secret_not_configured: the endpoint's secret is unset (fail closed); unavailable: the "
        "state database does not answer (PostgreSQL lost, or start-up still waiting for it), "
        "the lock backend cannot be asked (Redis down with redis.on_unavailable = skip) or the "
        "daemon is shutting down"
    ),
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
    return _json(ref("Error"), _ERROR_TEXT[code], headers)


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
            "content": {"application/json": {"schema": ref(body)}},
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
    return {
        "/healthz": {"get": _op("Liveness", {200: _json(ref("Health"), "the loop runs")}, [])},
        "/readyz": {
            "get": _op(
                "Readiness: the DB is open and locks are usable",
                {
                    200: _json(ref("Ready"), "ready"),
                    503: _json(ref("Ready"), "not ready; the body says why"),
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
            "get": _op("This document", {200: _json({"type": "object"}, "OpenAPI 3.1")}, [])
        },
        "/api/status": {
            "get": _op(
                "Daemon status", {200: _json(ref("Status"), "status")}, [], security=_READ_AUTH
            )
        },
        "/api/jobs": {
            "get": _op("Every job", {200: _json(ref("JobList"), "jobs")}, [], security=_READ_AUTH)
        },
        "/api/jobs/runs": {
            "get": _op(
                "Run records, newest first",
                {200: _json(ref("RunList"), "runs")},
                [400],
                security=_READ_AUTH,
                params=[
                    _query_param(
                        "job", {"type": "string", "pattern": JOB_NAME_RE.pattern}, "only this job"
                    ),
                    _query_param("status", {"enum": RUN_STATUS}, "only runs in this status"),
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
                {200: _json(ref("RunRecord"), "the run")},
                [400, 404],
                security=_READ_AUTH,
                params=[_path_param("id", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1})],
            )
        },
        "/api/jobs/{job}": {
            "post": _op(
                "Trigger a job run",
                {
                    202: _json(
                        ref("TriggerAccepted"),
                        "started",
                        {"Location": {"$ref": "#/components/headers/Location"}},
                    ),
                    200: _json(ref("RunRecord"), "with ?wait=true: the finished run"),
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
        **{
            f"/api/jobs/{{job}}/{verb}": {
                "post": _op(
                    f"{verb.capitalize()} a job's scheduled fires (fleet-wide, persisted)",
                    {200: _json(ref("JobPause"), f"the job is {verb}d")},
                    [400, 404],
                    security=_JOB_AUTH,
                    params=[_path_param("job", {"type": "string", "pattern": JOB_NAME_RE.pattern})],
                )
            }
            for verb in ("pause", "resume")
        },
        "/api/comparison/warmup": {
            "post": _op(
                "Request an on-demand warmup (never waits for compute)",
                {
                    202: _json(ref("WarmupAccepted"), "queued or running"),
                    200: _json(ref("WarmupReady"), "everything is already fresh"),
                },
                [404, 409, 429],
                security=_WARMUP_AUTH,
                body="WarmupBody",
            )
        },
        "/api/comparison/{slug}/status": {
            "get": _op(
                "Warmup state of a comparison",
                {200: _json(ref("ComparisonStatus"), "state")},
                [400, 404],
                security=_READ_AUTH,
                params=[_SLUG],
            )
        },
        "/api/comparison/{slug}": {
            "get": _op(
                "The premium pack",
                {200: _json(ref("Pack"), "the pack; needsWarmup when a part is missing")},
                [400, 404],
                security=_READ_AUTH,
                params=[_SLUG],
            )
        },
        "/api/comparisons/{slug}": {
            "put": _op(
                "Insert or update a comparison",
                {201: _json(ref("Upserted"), "created"), 200: _json(ref("Upserted"), "updated")},
                [],
                security=_JOB_AUTH,
                params=[_SLUG],
                body="ComparisonBody",
            )
        },
        "/api/comparisons/{slug}/views": {
            "post": _op(
                "Add views",
                {200: _json(ref("Views"), "the new counts")},
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
