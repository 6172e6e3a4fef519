"""The one error hierarchy of warmupd.

Every error the daemon raises on purpose is a :class:`WarmupdError`. Each subclass carries the data a
caller needs and knows its outside form: ``code`` and ``http_status`` for the API envelope
``{"error": code, "message": ...}``, ``exit_code`` for the CLI. The HTTP edge (``http.edge``) and
the CLI map errors through these attributes only, so adding an error never touches either edge.
"""

from __future__ import annotations


class WarmupdError(Exception):
    """Base class of every deliberate warmupd error."""

    code = "internal"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: object = _Missing()
"""Sentinel for a :class:`ConfigError` about a key that has no value at all."""


class ConfigError(WarmupdError):
    """A configuration value is invalid; names the key path and the offending value."""

    code = "config_error"
    exit_code = 2

    def __init__(self, path: str, value: object, reason: str) -> None:
        self.path = path
        self.value = value
        self.reason = reason
        message = f"config error: {path}: {reason}"
        if value is not MISSING and repr(value) not in reason:
            message += f" (got {value!r})"
        super().__init__(message)


class UsageError(WarmupdError):
    """A CLI invocation is wrong (bad argument, unreadable file)."""

    code = "usage"
    exit_code = 2


class InvalidRequest(WarmupdError):
    """A request body, query or path parameter is invalid; ``field`` names it."""

    code = "invalid_request"
    http_status = 400
    exit_code = 2

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class Unauthorized(WarmupdError):
    """A required secret is missing or wrong."""

    code = "unauthorized"
    http_status = 401


class NotFound(WarmupdError):
    """The addressed job, run or comparison does not exist."""

    code = "not_found"
    http_status = 404


class StaleDataHash(WarmupdError):
    """The client's dataHash is not the comparison's current one."""

    code = "stale_data_hash"
    http_status = 409

    def __init__(self, slug: str, given: str, current: str) -> None:
        self.current = current
        super().__init__(f"dataHash {given!r} is not the current one for {slug!r} ({current!r})")


class PayloadTooLarge(WarmupdError):
    """The request body exceeds ``http.max_body_bytes``."""

    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(WarmupdError):
    """A request body was sent with a content type other than JSON."""

    code = "unsupported_media_type"
    http_status = 415


class Busy(WarmupdError):
    """Base of the 429 answers; ``retry_after_s`` becomes the ``Retry-After`` header."""

    http_status = 429
    exit_code = 3

    def __init__(self, message: str, retry_after_s: int = 5, run_id: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.run_id = run_id


class AlreadyRunning(Busy):
    """This process already runs the job."""

    code = "already_running"


class LockedElsewhere(Busy):
    """Another process holds the job lock; ``node`` and ``run_id`` name it when known."""

    code = "locked_elsewhere"

    def __init__(
        self,
        message: str,
        retry_after_s: int = 5,
        run_id: int | None = None,
        node: str | None = None,
    ) -> None:
        super().__init__(message, retry_after_s, run_id)
        self.node = node


class QueueFull(Busy):
    """The on-demand queue is at ``on_demand.max_queued``."""

    code = "queue_full"


class SecretNotConfigured(WarmupdError):
    """The endpoint needs a secret that is empty or unset (fail closed)."""

    code = "secret_not_configured"
    http_status = 503


class ServiceUnavailable(WarmupdError):
    """A backend the request needs (DB, lock backend) cannot be reached right now."""

    code = "unavailable"
    http_status = 503


class DatabaseUnavailable(ServiceUnavailable):
    """The state database cannot answer right now (down, restarting, unreachable, out of connections).

    Transient: the daemon keeps serving what does not need the database, reports ``degraded`` and
    goes on when the database answers again; at start-up it keeps trying (SPEC §14).
    """


class DatabaseRejected(WarmupdError):
    """The state database refused warmupd for a reason that waiting will not fix (configuration).

    Wrong credentials, a database that does not exist, a server that rejects a connection
    parameter, a role that may not create the schema. Start-up stops with exit code 2.
    """

    code = "database_rejected"
    http_status = 503
    exit_code = 2


class SchemaTooNew(WarmupdError):
    """The state database was migrated by a newer warmupd; this one must not touch it."""

    code = "schema_too_new"
    exit_code = 2

    def __init__(self, where: str, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"{where} has schema version {found}, newer than this warmupd's {known}; "
            "refusing to start (upgrade warmupd, or point it at another database)"
        )


class CopyRefused(WarmupdError):
    """``warmupd copy-state`` will not copy between these two states (the message says why)."""

    code = "copy_refused"


class LockLost(WarmupdError):
    """A held lease could not be renewed (taken, expired or unreachable past its lease)."""

    code = "lock_lost"


class ProducerError(WarmupdError):
    """A producer could not compute one item; the message is safe to record in a run."""

    code = "producer_error"


class JobError(WarmupdError):
    """A run of a user-defined job cannot go on (a sitemap refused, a secret header unset)."""

    code = "job_error"


class InsufficientData(ProducerError):
    """The series has fewer points than ``forecast.min_points``."""

    code = "insufficient_data"


def exit_code_for(exc: BaseException) -> int:
    """Map an exception to a CLI exit code (1 for anything that is not a warmupd error)."""
    if isinstance(exc, WarmupdError):
        return exc.exit_code
    return 1
