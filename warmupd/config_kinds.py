"""``[jobs.<name>] kind = "http" | "command"``: the user-defined job kinds' config (SPEC §16).

:func:`split_kind_job` checks a kind job's table — its name, its kind, that every key belongs to that
kind — and returns the keys every job shares (for :mod:`warmupd.config` to parse as usual), the
defaults that differ from the built-in jobs', and the kind's own settings as a frozen dataclass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from warmupd.config_values import parse_int, parse_str, parse_url
from warmupd.errors import MISSING, ConfigError

KIND_HTTP = "http"
KIND_COMMAND = "command"
KINDS = (KIND_HTTP, KIND_COMMAND)

_JOB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# RFC 9110 token characters: a header name is one token.
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_RATE_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, kw_only=True)
class HttpKind:
    """``kind = "http"``: the URLs (and sitemap) a run requests and how."""

    kind: ClassVar[str] = KIND_HTTP

    urls: tuple[str, ...] = ()
    sitemap: str | None = None
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    headers_env: dict[str, str] = field(default_factory=dict)
    """Header name → name of the environment variable holding its (secret) value."""
    expect: tuple[tuple[int, int], ...] = ((200, 399),)
    """Inclusive status ranges that count as warmed."""
    per_host_concurrency: int | None = None
    rate_per_s: float | None = None
    allow_hosts: tuple[str, ...] = ()

    def expected(self, status: int) -> bool:
        """Whether ``status`` counts as warmed."""
        return any(lo <= status <= hi for lo, hi in self.expect)


@dataclass(frozen=True, kw_only=True)
class CommandKind:
    """``kind = "command"``: the program a run executes."""

    kind: ClassVar[str] = KIND_COMMAND

    command: tuple[str, ...]
    working_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    success_exit_codes: tuple[int, ...] = (0,)


KindSpec = HttpKind | CommandKind

# The keys every job has that make sense for each kind (the rest, e.g. ``window``, do not belong).
_COMMON = {
    KIND_HTTP: {
        "schedule",
        "timezone",
        "enabled",
        "limit",
        "concurrency",
        "max_duration",
        "misfire_grace",
        "jitter",
        "item_timeout",
    },
    KIND_COMMAND: {"schedule", "timezone", "enabled", "max_duration", "misfire_grace", "jitter"},
}
# Defaults that differ from JobConfig's (which are the forecasts job's).
_DEFAULTS: dict[str, dict[str, Any]] = {
    KIND_HTTP: {"concurrency": 8, "limit": 100_000, "item_timeout_ms": 30_000},
    # One item (the program); max_duration is its timeout, so no separate item timeout applies.
    KIND_COMMAND: {"concurrency": 1, "limit": 1},
}


def _web_url(path: str, value: object) -> str:
    url = parse_url(path, value, schemes=("http", "https"))
    if not urlsplit(url).hostname:
        raise ConfigError(path, value, "must be a URL with a host")
    return url


def _str_table(
    path: str, value: object, key_re: re.Pattern[str], what: str, check: Callable[[str, Any], str]
) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, value, "must be a table")
    out = {}
    for key, item in value.items():
        if not key_re.match(key):
            raise ConfigError(f"{path}.{key}", MISSING, f"is not a valid {what}")
        out[key] = check(f"{path}.{key}", item)
    return out


def _list(path: str, value: object, *, empty: bool = True) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(path, value, "must be a list")
    if not value and not empty:
        raise ConfigError(path, value, "must not be empty")
    return value


def _header_value(path: str, value: object) -> str:
    text = parse_str(path, value, empty=True)
    if "\r" in text or "\n" in text:
        raise ConfigError(path, value, "must not contain line breaks")
    return text


def _env_name(path: str, value: object) -> str:
    name = parse_str(path, value)
    if not _ENV_NAME_RE.match(name):
        raise ConfigError(path, value, "must be the name of an environment variable")
    return name


def parse_expect(path: str, value: object) -> tuple[tuple[int, int], ...]:
    """``[200, 204, "300-399"]``: status codes and inclusive ranges."""
    ranges = []
    for i, item in enumerate(_list(path, value, empty=False)):
        where = f"{path}[{i}]"
        if isinstance(item, str) and re.fullmatch(r"\d{3}-\d{3}", item):
            lo, hi = (int(part) for part in item.split("-"))
        elif isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        else:
            raise ConfigError(where, item, "must be a status code such as 200 or a range '200-399'")
        if not 100 <= lo <= hi <= 599:
            raise ConfigError(where, item, "must be status codes within 100-599, low to high")
        ranges.append((lo, hi))
    return tuple(ranges)


def parse_rate(path: str, value: object) -> float:
    """``"20/s"``, ``"100/m"`` or ``"600/h"`` → requests per second."""
    text = parse_str(path, value)
    match = _RATE_RE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(path, value, "must be a positive rate such as '20/s', '100/m' or '600/h'")
    return float(match.group(1)) / _RATE_UNIT_S[match.group(2)]


def _host(path: str, value: object) -> str:
    host = parse_str(path, value).lower()
    if not _HOST_RE.match(host):
        raise ConfigError(path, value, "must be a host name such as 'cdn.example.com'")
    return host


def parse_http(path: str, raw: Mapping[str, Any]) -> HttpKind:
    """The ``kind = "http"`` keys of ``raw``."""
    values: dict[str, Any] = {}
    if "urls" in raw:
        values["urls"] = tuple(
            _web_url(f"{path}.urls[{i}]", url)
            for i, url in enumerate(_list(f"{path}.urls", raw["urls"]))
        )
    if "sitemap" in raw:
        values["sitemap"] = _web_url(f"{path}.sitemap", raw["sitemap"])
    if not values.get("urls") and not values.get("sitemap"):
        raise ConfigError(f"{path}.urls", MISSING, "a job of kind 'http' needs urls or sitemap")
    if "method" in raw:
        values["method"] = parse_str(f"{path}.method", raw["method"], choices=("GET", "HEAD"))
    if "headers" in raw:
        values["headers"] = _str_table(
            f"{path}.headers", raw["headers"], _HEADER_NAME_RE, "header name", _header_value
        )
    if "headers_env" in raw:
        values["headers_env"] = _str_table(
            f"{path}.headers_env", raw["headers_env"], _HEADER_NAME_RE, "header name", _env_name
        )
    if "expect" in raw:
        values["expect"] = parse_expect(f"{path}.expect", raw["expect"])
    if "per_host_concurrency" in raw:
        values["per_host_concurrency"] = parse_int(
            f"{path}.per_host_concurrency", raw["per_host_concurrency"], minimum=1, maximum=256
        )
    if "rate" in raw:
        values["rate_per_s"] = parse_rate(f"{path}.rate", raw["rate"])
    if "allow_hosts" in raw:
        values["allow_hosts"] = tuple(
            _host(f"{path}.allow_hosts[{i}]", h)
            for i, h in enumerate(_list(f"{path}.allow_hosts", raw["allow_hosts"]))
        )
    return HttpKind(**values)


def parse_command(path: str, raw: Mapping[str, Any]) -> CommandKind:
    """The ``kind = "command"`` keys of ``raw``."""
    where = f"{path}.command"
    if "command" not in raw:
        raise ConfigError(where, MISSING, "is required for a job of kind 'command'")
    argv = raw["command"]
    if isinstance(argv, str):
        raise ConfigError(
            where,
            argv,
            "must be a list of arguments such as ['/usr/local/bin/warm', '--all']; a string is "
            "neither split nor given to a shell (write ['sh', '-c', '...'] to use one)",
        )
    command = tuple(
        parse_str(f"{where}[{i}]", arg, empty=i > 0)
        for i, arg in enumerate(_list(where, argv, empty=False))
    )
    values: dict[str, Any] = {"command": command}
    if "working_dir" in raw:
        values["working_dir"] = parse_str(f"{path}.working_dir", raw["working_dir"])
    if "env" in raw:
        env = _str_table(
            f"{path}.env",
            raw["env"],
            _ENV_NAME_RE,
            "variable name",
            lambda p, v: parse_str(p, v, empty=True),
        )
        reserved = sorted(k for k in env if k.startswith("WARMUPD_"))
        if reserved:
            raise ConfigError(
                f"{path}.env.{reserved[0]}", MISSING, "WARMUPD_* variables are set by warmupd"
            )
        values["env"] = env
    if "success_exit_codes" in raw:
        values["success_exit_codes"] = tuple(
            parse_int(f"{path}.success_exit_codes[{i}]", code, minimum=0, maximum=255)
            for i, code in enumerate(
                _list(f"{path}.success_exit_codes", raw["success_exit_codes"], empty=False)
            )
        )
    return CommandKind(**values)


_KIND_KEYS = {
    KIND_HTTP: {
        "urls",
        "sitemap",
        "method",
        "headers",
        "headers_env",
        "expect",
        "per_host_concurrency",
        "rate",
        "allow_hosts",
    },
    KIND_COMMAND: {"command", "working_dir", "env", "success_exit_codes"},
}
_PARSERS: dict[str, Callable[[str, Mapping[str, Any]], KindSpec]] = {
    KIND_HTTP: parse_http,
    KIND_COMMAND: parse_command,
}


def split_kind_job(
    name: str, raw: Mapping[str, Any], *, builtin: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any], KindSpec]:
    """Check the table of a job that is not built in.

    :returns: the shared keys (still raw), the kind's defaults for them, and the kind's settings.
    :raises ConfigError: a bad name, a missing or unknown kind, a key that does not belong to the
        kind, a missing ``schedule``, or an invalid value of the kind's own keys.
    """
    path = f"jobs.{name}"
    if not _JOB_NAME_RE.match(name):
        raise ConfigError(path, MISSING, "a job name is 1-64 characters of a-z, 0-9, '_' and '-'")
    if "kind" not in raw:
        raise ConfigError(
            f"{path}.kind",
            MISSING,
            f"unknown job: set kind = 'http' or 'command' (built-in jobs: {', '.join(builtin)})",
        )
    kind = parse_str(f"{path}.kind", raw["kind"], choices=KINDS)
    allowed = _COMMON[kind] | _KIND_KEYS[kind] | {"kind"}
    stray = sorted(set(raw) - allowed)
    if stray:
        raise ConfigError(
            f"{path}.{stray[0]}",
            MISSING,
            f"does not belong to a job of kind '{kind}' (known: {', '.join(sorted(allowed))})",
        )
    if "schedule" not in raw:
        raise ConfigError(f"{path}.schedule", MISSING, f"is required for a job of kind '{kind}'")
    common = {key: value for key, value in raw.items() if key in _COMMON[kind]}
    return common, _DEFAULTS[kind], _PARSERS[kind](path, raw)
