"""``[database]``: where the state lives (SPEC §14), and database URLs that never show a password.

Absent ``url`` keeps the embedded default, the SQLite file ``<state_dir>/warmupd.db`` (SPEC §3). A
``postgresql://`` (or ``postgres://``) URL puts every table in that PostgreSQL database.

A password never stays in a URL this module hands on: :func:`parse_database_url` splits it off
(from the userinfo or a ``password=`` query parameter), and every URL kept in the configuration,
shown by ``check-config`` or written into an error is password-free. The password itself resolves
like the other secrets — ``$CREDENTIALS_DIRECTORY/database_password`` > ``secrets.database_password_file``
> ``secrets.database_password_env`` — with one embedded in the URL as the last resort, and lives
only in :attr:`DatabaseConfig.password` (``repr=False``, left out of ``describe``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from warmupd.config_values import (
    parse_bool,
    parse_duration_ms,
    parse_int,
    parse_section,
    parse_str,
    resolve_secret,
)
from warmupd.errors import ConfigError

SCHEMES = ("postgresql", "postgres")
REDACTED = "***"

_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.%-]+)(?::(\d{1,5}))?$")
_NAME_RE = re.compile(r"[A-Za-z0-9_.~%+$!*'()-]+")
_PARAM_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUERY_PASSWORD_RE = re.compile(r"(?i)([?&]password=)[^&]*")


@dataclass(frozen=True, kw_only=True)
class DatabaseUrl:
    """A parsed PostgreSQL URL; :attr:`url` is its password-free form, safe to show anywhere."""

    url: str
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    """``[database]``; ``url`` None means the SQLite file ``<state_dir>/warmupd.db``."""

    url: str | None = None
    """Never holds a password (it is split off into :attr:`password`)."""
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout_ms: int = 5_000
    statement_timeout_ms: int = 30_000
    statement_cache: bool = True
    """False for a transaction-mode pooler that cannot keep prepared statements (PgBouncer < 1.21)."""
    password: str | None = field(default=None, repr=False)
    password_source: str = "unset"  # noqa: S105 - where the password came from, never its value

    @property
    def is_postgres(self) -> bool:
        """Whether the state lives in PostgreSQL."""
        return self.url is not None


def redact_url(text: str) -> str:
    """``text`` with anything that may be a password replaced by ``***``.

    Works on malformed input too (it is what errors show): every ``password=`` query value is
    hidden first, then the userinfo — which runs to the *last* ``@``, so a password with an
    unencoded ``/``, ``?`` or ``@`` is hidden whole.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    rest = _QUERY_PASSWORD_RE.sub(rf"\1{REDACTED}", rest)
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:{REDACTED}@{hostpart}" if colon else f"{user}@{hostpart}"
    return f"{scheme}{sep}{rest}"


def parse_database_url(path: str, value: object) -> DatabaseUrl:
    """A ``postgresql://[user[:password]@]host[:port][,host[:port]…][/dbname][?param=value…]`` URL.

    The userinfo runs to the last ``@`` (as in :func:`redact_url`); reserved characters in a user
    name, database name or query must be percent-encoded.

    :raises ConfigError: naming ``path``; the value is shown only through :func:`redact_url` and no
        reason quotes a part of it.
    """
    if not isinstance(value, str):
        raise ConfigError(path, value, "must be a string")
    shown = redact_url(value)

    def bad(reason: str) -> ConfigError:
        return ConfigError(path, shown, reason)

    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise bad("must be a URL starting with postgresql:// or postgres://")
    userinfo, at, hostpart = rest.rpartition("@")
    hostpart, _, query = hostpart.partition("?")
    host_list, _, dbname = hostpart.partition("/")
    user, _, password = userinfo.partition(":")
    if at and not user:
        raise bad("names a password without a user")
    if not _NAME_RE.fullmatch(user or "x"):
        raise bad("invalid user name (percent-encode reserved characters)")
    if not host_list:
        raise bad("must name a host, e.g. postgresql://warmupd@db.example:5432/warmupd")
    for host in host_list.split(","):
        match = _HOST_RE.match(host)
        if match is None:
            raise bad("invalid host (a name, an IPv4 address or [IPv6], then an optional :port)")
        if match.group(2) is not None and not 1 <= int(match.group(2)) <= 65535:
            raise bad("invalid port (must be 1-65535)")
    if not _NAME_RE.fullmatch(dbname or "x"):
        raise bad("invalid database name (percent-encode reserved characters)")
    params = parse_qsl(query, keep_blank_values=True)
    if "?" in query or any(not _PARAM_RE.fullmatch(k) for k, _ in params):
        raise bad("invalid query (percent-encode reserved characters)")
    query_password = [v for k, v in params if k.lower() == "password"]
    params = [(k, v) for k, v in params if k.lower() != "password"]
    secret = unquote(password) if password else (query_password[-1] if query_password else None)
    url = f"{scheme.lower()}://"
    if user:
        url += f"{user}@"
    url += host_list
    if dbname:
        url += f"/{dbname}"
    if params:
        url += f"?{urlencode(params)}"
    return DatabaseUrl(url=url, password=secret or None)


def _dur() -> Callable[[str, Any], int]:
    return lambda p, v: parse_duration_ms(p, v)


_DATABASE: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "url": ("url", lambda p, v: parse_database_url(p, v)),
    "pool_min": ("pool_min", lambda p, v: parse_int(p, v, minimum=0, maximum=1000)),
    "pool_max": ("pool_max", lambda p, v: parse_int(p, v, minimum=1, maximum=1000)),
    "connect_timeout": ("connect_timeout_ms", _dur()),
    "statement_timeout": ("statement_timeout_ms", _dur()),
    "statement_cache": ("statement_cache", parse_bool),
}

SECRETS_KEYS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "database_password_env": ("database_password_env", lambda p, v: parse_str(p, v)),
    "database_password_file": ("database_password_file", lambda p, v: parse_str(p, v)),
}
"""The ``[secrets]`` keys of the database password (merged into the section's parsers)."""


def parse_database(
    raw: Mapping[str, Any], *, password_file: str | None, password_env: str, env: Mapping[str, str]
) -> DatabaseConfig:
    """Build ``[database]`` and resolve its password (SPEC §14).

    :raises ConfigError: naming the first invalid key path.
    """
    section = parse_section("database", raw, _DatabaseSection, _DATABASE)
    cfg = DatabaseConfig(
        url=section.url.url if section.url else None,
        pool_min=section.pool_min,
        pool_max=section.pool_max,
        connect_timeout_ms=section.connect_timeout_ms,
        statement_timeout_ms=section.statement_timeout_ms,
        statement_cache=section.statement_cache,
    )
    if cfg.pool_min > cfg.pool_max:
        raise ConfigError("database.pool_min", cfg.pool_min, "must not exceed database.pool_max")
    if cfg.url is None:
        return cfg
    password, source = resolve_secret(
        "secrets.database_password", "database_password", password_file, password_env, env
    )
    if password is None and section.url is not None and section.url.password:
        password, source = section.url.password, "url"
    return replace(cfg, password=password, password_source=source)


@dataclass(frozen=True, kw_only=True)
class _DatabaseSection:
    """The raw section as parsed: the URL still carries its (hidden) password."""

    url: DatabaseUrl | None = None
    pool_min: int = DatabaseConfig.pool_min
    pool_max: int = DatabaseConfig.pool_max
    connect_timeout_ms: int = DatabaseConfig.connect_timeout_ms
    statement_timeout_ms: int = DatabaseConfig.statement_timeout_ms
    statement_cache: bool = DatabaseConfig.statement_cache
