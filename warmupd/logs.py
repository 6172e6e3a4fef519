"""Logging: one record per line on stderr, text (default) or JSON, journald-aware, secrets redacted.

The text format is ``time level event key=value …``::

    2026-11-28T12:00:00.123Z INFO run.finished job=warmup-forecasts run=12 status=success

Values containing spaces, quotes, ``=`` or backslashes are double-quoted with backslash escapes,
and control characters are escaped everywhere (a newline becomes ``\\n``), so every record is
exactly one line: ``grep`` and journald see whole records and a value cannot forge another record.
``json`` is opt-in and prints one object per line (``{"ts", "level", "logger", "event", …fields}``).

Under systemd, stderr is a journald stream and ``$JOURNAL_STREAM`` holds its ``st_dev:st_ino``; then
each line starts with a syslog priority prefix ``<N>`` so ``journalctl -p warning`` works. The
variable is inherited by children whose stderr may go elsewhere, hence the comparison with stderr's
actual inode rather than trusting its presence.

Structured records come from :func:`get_logger` (``log.info("run.started", job=…, run=…)``), a
small adapter over :mod:`logging` — no structlog. Modules that prefer plain :mod:`logging` pass the
fields as ``extra={"fields": {...}}``; records from third-party libraries (aiohttp, asyncio) are
rendered with their logger name as the event and the message as ``msg=``.

This module imports only the standard library and :mod:`warmupd.errors`, so every layer may use it.

Writes are synchronous: a QueueHandler thread would keep a slow journald from blocking the loop, but
records still queued would be lost on a crash — exactly the records that explain it — and journald
stream writes are fast local socket writes in practice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TextIO

from warmupd.errors import UsageError

__all__ = [
    "FIELDS_ATTR",
    "JsonFormatter",
    "StructLogger",
    "TextFormatter",
    "capture_process_output",
    "configure_logging",
    "get_logger",
    "journald_stream_matches",
    "logging_settings",
    "outcome_level",
    "redact",
    "register_secret",
    "reset_logging",
]

FIELDS_ATTR = "fields"
"""The ``LogRecord`` attribute (set via ``extra=``) that carries a record's structured fields."""

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}  # fmt: skip

# syslog priorities (RFC 5424): 2 crit, 3 err, 4 warning, 6 info, 7 debug; custom levels in between
# take the priority of the standard level below them.
_SYSLOG_PRIORITY = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)


def _priority(levelno: int) -> int:
    return next((p for threshold, p in _SYSLOG_PRIORITY if levelno >= threshold), 7)


_RESERVED_JSON_KEYS = frozenset({"ts", "level", "logger", "event"})

# ------------------------------------------------------------------------------------------------
# Redaction. The primary rule is that secrets are never passed to a logger; this is the safety net.

_secrets_lock = threading.Lock()
_secret_values: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Make ``value`` appear as ``***`` in every record formatted from now on.

    Empty values are ignored (they would match everywhere). Idempotent and thread-safe.
    """
    global _secret_values, _secret_pattern
    if not value:
        return
    with _secrets_lock:
        values = _secret_values | {value}
        # Longest first, so that a secret containing another one is replaced whole.
        ordered = sorted(values, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(v) for v in ordered))
        _secret_values = values


def _clear_secrets() -> None:
    """Forget every registered secret (tests only)."""
    global _secret_values, _secret_pattern
    with _secrets_lock:
        _secret_values = frozenset()
        _secret_pattern = None


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _secret_pattern  # one read: a concurrent register_secret swaps it atomically
    if pattern is None:
        return text
    return pattern.sub("***", text)


# ------------------------------------------------------------------------------------------------
# Formatting


def _iso_ms(created: float) -> str:
    ms = int(created * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _plain(value: object) -> object:
    """A field value as a JSON-native value (str for anything unusual), redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(value if isinstance(value, str) else str(value))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NEEDS_QUOTES = re.compile(r'[\s"=\\]')
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}
_KEY_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _escape_control(text: str) -> str:
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def _text_value(value: object) -> str:
    plain = _plain(value)
    if plain is None:
        return "null"
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, int | float):
        return repr(plain)
    text = str(plain)
    if text == "" or _NEEDS_QUOTES.search(text):
        return '"' + re.sub(r'[\x00-\x1f\x7f"\\]', lambda m: _ESCAPES.get(
            m.group(), f"\\x{ord(m.group()):02x}"), text) + '"'  # fmt: skip
    return _escape_control(text)


def _text_key(key: str) -> str:
    return _KEY_SAFE.sub("_", key) or "_"


def _record_parts(record: logging.LogRecord) -> tuple[str, dict[str, object]]:
    """The event name and the fields of ``record`` (foreign records get ``msg=``)."""
    fields = getattr(record, FIELDS_ATTR, None)
    if isinstance(fields, Mapping):
        event = str(record.msg)
        out = dict(fields)
    else:
        event = record.name
        out = {"msg": record.getMessage()}
    if record.exc_info and record.exc_info[0] is not None:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        out["stack"] = record.stack_info
    return event, out


class _BaseFormatter(logging.Formatter):
    """Adds the journald priority prefix and the final redaction pass."""

    def __init__(self, *, journald: bool = False) -> None:
        super().__init__()
        self.journald = journald

    def render(self, record: logging.LogRecord) -> str:
        """The record as one line, without prefix."""
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        """:meth:`render`, redacted, as exactly one line, with ``<N>`` under journald."""
        # Values were redacted one by one before escaping (an escaped secret would no longer match);
        # this second pass catches a secret that spans a key and a value or the event name.
        line = _escape_control(redact(self.render(record)))
        if self.journald:
            line = f"<{_priority(record.levelno)}>{line}"
        return line


class TextFormatter(_BaseFormatter):
    """``time level event key=value …``."""

    def render(self, record: logging.LogRecord) -> str:
        """See :class:`TextFormatter`."""
        event, fields = _record_parts(record)
        parts = [_iso_ms(record.created), record.levelname, _text_value(event)]
        parts.extend(f"{_text_key(k)}={_text_value(v)}" for k, v in fields.items())
        return " ".join(parts)


class JsonFormatter(_BaseFormatter):
    """One JSON object per line: ``ts``, ``level`` (lower case), ``logger``, ``event``, fields.

    A field named like one of the four fixed keys is renamed with a trailing ``_`` instead of
    silently overwriting it.
    """

    def render(self, record: logging.LogRecord) -> str:
        """See :class:`JsonFormatter`."""
        event, fields = _record_parts(record)
        out: dict[str, object] = {
            "ts": _iso_ms(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(event),
        }
        for key, value in fields.items():
            out[key + "_" if key in _RESERVED_JSON_KEYS else key] = _plain(value)
        # ensure_ascii keeps the line pure ASCII: no raw control character can survive in it.
        return json.dumps(out, ensure_ascii=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------
# Handler and set-up


class _StderrHandler(logging.Handler):
    """Writes to ``sys.stderr`` as it is at emit time (so test capture and redirection work)."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = self._stream if self._stream is not None else sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging.Handler contract: report via handleError, never raise
            self.handleError(record)


_installed: _StderrHandler | None = None
_settings: tuple[str, str] = ("text", "info")


def journald_stream_matches(
    stream: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """True when ``$JOURNAL_STREAM`` (``dev:ino``) names the file behind ``stream`` (or stderr)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    target = sys.stderr if stream is None else stream
    try:
        st = os.fstat(target.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (OSError, ValueError, AttributeError):
        # No real file descriptor (pytest capture, StringIO) or a malformed variable.
        return False


def configure_logging(
    fmt: str = "text", level: str = "info", *, stream: TextIO | None = None
) -> None:
    """Route every record of the process to one stderr handler.

    Idempotent: calling it again (after a reload) replaces the handler it installed before; handlers
    installed by others are left alone.

    :param fmt: ``"text"`` or ``"json"``.
    :param level: ``"debug"``, ``"info"``, ``"warning"``, ``"error"`` or ``"critical"``.
    :param stream: write here instead of ``sys.stderr`` (tests).
    :raises UsageError: for an unknown format or level.
    """
    global _installed, _settings
    fmt_key = fmt.lower()
    if fmt_key not in ("text", "json"):
        raise UsageError(f"log format must be 'text' or 'json', got {fmt!r}")
    level_no = _LEVELS.get(level.lower())
    if level_no is None:
        raise UsageError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    journald = journald_stream_matches(stream)
    handler = _StderrHandler(stream)
    formatter_cls = TextFormatter if fmt_key == "text" else JsonFormatter
    handler.setFormatter(formatter_cls(journald=journald))
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(level_no)
    _installed = handler
    _settings = (fmt_key, level.lower())
    # aiohttp's access log repeats what warmupd_http_requests_total and our own request log carry.
    logging.getLogger("aiohttp.access").setLevel(max(level_no, logging.WARNING))


def logging_settings() -> tuple[str, str]:
    """``(format, level)`` of the last :func:`configure_logging`, for child processes to copy."""
    return _settings


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("warmupd").critical(
        "uncaught", exc_info=(exc_type, exc, tb), extra={FIELDS_ATTR: {}}
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return  # what threading's own hook ignores too
    logging.getLogger("warmupd").error(
        "thread.uncaught",
        exc_info=args.exc_value,
        extra={FIELDS_ATTR: {"thread": args.thread.name if args.thread else None}},
    )


def capture_process_output() -> None:
    """Send Python's own stderr writers through the handler, so each is one record.

    Warnings (``warnings.showwarning``) and uncaught exceptions (``sys.excepthook``,
    ``threading.excepthook``) otherwise print several raw lines, which journald stores as separate
    unprefixed records at priority 6 — a traceback that ``journalctl -p warning`` never shows.
    """
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def reset_logging() -> None:
    """Remove the handler :func:`configure_logging` installed (tests, embedding)."""
    global _installed
    if _installed is not None:
        logging.getLogger().removeHandler(_installed)
        _installed = None


# ------------------------------------------------------------------------------------------------
# Structured API


class StructLogger:
    """``log.info("run.finished", job="warmup-forecasts", run=12, status="success")``.

    The first argument is the event name (dotted, lower case, no spaces); keyword arguments are the
    fields, rendered in the order given after any bound fields. ``exc_info`` keeps its
    :mod:`logging` meaning.
    """

    __slots__ = ("_bound", "_logger")

    def __init__(self, logger: logging.Logger, bound: Mapping[str, object] | None = None) -> None:
        self._logger = logger
        self._bound: dict[str, object] = dict(bound or {})

    @property
    def name(self) -> str:
        """The underlying logger's name."""
        return self._logger.name

    def bind(self, **fields: object) -> StructLogger:
        """A logger that adds ``fields`` to every record (e.g. ``job=`` and ``run=`` of one run)."""
        return StructLogger(self._logger, {**self._bound, **fields})

    def is_enabled_for(self, level: int) -> bool:
        """Whether a record at ``level`` would be emitted (skip building expensive fields)."""
        return self._logger.isEnabledFor(level)

    def _log(self, level: int, event: str, exc_info: Any, fields: dict[str, object]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        merged = {**self._bound, **fields} if self._bound else fields
        # stacklevel=3 attributes the record to our caller, not to this adapter.
        self._logger.log(level, event, exc_info=exc_info, extra={FIELDS_ATTR: merged}, stacklevel=3)

    def log(self, level: int, event: str, *, exc_info: Any = None, **fields: object) -> None:
        """Log ``event`` at ``level`` (a :mod:`logging` level), for a level chosen at run time."""
        self._log(level, event, exc_info, fields)

    def debug(self, event: str, *, exc_info: Any = None, **fields: object) -> None:
        """Log ``event`` at DEBUG."""
        self._log(logging.DEBUG, event, exc_info, fields)

    def info(self, event: str, *, exc_info: Any = None, **fields: object) -> None:
        """Log ``event`` at INFO."""
        self._log(logging.INFO, event, exc_info, fields)

    def warning(self, event: str, *, exc_info: Any = None, **fields: object) -> None:
        """Log ``event`` at WARNING."""
        self._log(logging.WARNING, event, exc_info, fields)

    def error(self, event: str, *, exc_info: Any = None, **fields: object) -> None:
        """Log ``event`` at ERROR."""
        self._log(logging.ERROR, event, exc_info, fields)

    def exception(self, event: str, **fields: object) -> None:
        """Log ``event`` at ERROR with the exception being handled (as field ``exc``)."""
        self._log(logging.ERROR, event, True, fields)


def outcome_level(status: str, *, processed: int, failed: int) -> int:
    """The level of a ``*.finished`` record: WARNING for a failed run, ERROR when every item failed.

    ``journalctl -p warning`` is what operators watch; a failed run must show there, and one that
    failed every item means the job is broken (e.g. no pool worker can start), not unlucky.
    """
    if status != "failed":
        return logging.INFO
    return logging.ERROR if failed and not processed else logging.WARNING


def get_logger(name: str) -> StructLogger:
    """The structured logger for module ``name`` (use ``__name__``)."""
    return StructLogger(logging.getLogger(name))
