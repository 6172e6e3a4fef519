"""Configuration values in and out: named parse functions, secret resolution, the effective view.

Each parse function takes the key path and the raw TOML value and returns a typed value or raises
:class:`~warmupd.errors.ConfigError` naming that path and value; :mod:`warmupd.config` builds the
tree from them. :func:`describe` renders a built tree for ``check-config`` with secrets only as
set/unset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from warmupd.errors import MISSING, ConfigError

if TYPE_CHECKING:
    from warmupd.config import Config
from warmupd.scheduler import validate_schedule

T = TypeVar("T")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(path: str, value: object, *, allow_zero: bool = False) -> int:
    """``"500ms" "30s" "15m" "1h" "7d"`` or integer seconds → milliseconds."""
    if isinstance(value, bool):
        raise ConfigError(path, value, "must be a duration such as '30s' or an integer of seconds")
    if isinstance(value, int):
        ms = value * 1000
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ConfigError(
                path,
                value,
                f"invalid duration {value!r} (use e.g. '500ms', '30s', '15m', '1h', '7d')",
            )
        ms = round(float(match.group(1)) * _UNIT_MS[match.group(2)])
    else:
        raise ConfigError(path, value, "must be a duration such as '30s' or an integer of seconds")
    if ms < 0 or (ms == 0 and not allow_zero):
        raise ConfigError(path, value, "must be a positive duration")
    return ms


def parse_int(path: str, value: object, *, minimum: int, maximum: int = 2**31) -> int:
    """An integer within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, value, "must be an integer")
    if not minimum <= value <= maximum:
        raise ConfigError(path, value, f"must be between {minimum} and {maximum}")
    return value


def parse_bool(path: str, value: object) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ConfigError(path, value, "must be true or false")
    return value


def parse_str(
    path: str, value: object, *, choices: tuple[str, ...] = (), empty: bool = False
) -> str:
    """A string, optionally one of ``choices``."""
    if not isinstance(value, str):
        raise ConfigError(path, value, "must be a string")
    if not empty and not value.strip():
        raise ConfigError(path, value, "must not be empty")
    if choices and value not in choices:
        raise ConfigError(path, value, f"must be one of {', '.join(choices)}")
    return value


def parse_on_unavailable(path: str, value: object) -> str:
    """``database`` or ``skip``; ``sqlite`` (the name before PostgreSQL state) means ``database``:
    the fallback is the configured state database's lease rows, whichever engine holds it."""
    choice = parse_str(path, value, choices=("database", "sqlite", "skip"))
    return "database" if choice == "sqlite" else choice


def parse_timezone(path: str, value: object) -> str:
    """An IANA time zone name that zoneinfo knows."""
    name = parse_str(path, value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(path, value, f"unknown time zone {name!r}") from None
    return name


def parse_cron(path: str, value: object) -> str:
    """A schedule accepted by :func:`warmupd.scheduler.validate_schedule`."""
    expr = parse_str(path, value)
    try:
        validate_schedule(expr)
    except ValueError as exc:
        raise ConfigError(path, value, str(exc)) from None
    return expr


def parse_url(path: str, value: object, *, schemes: tuple[str, ...]) -> str:
    """A URL with one of ``schemes``."""
    url = parse_str(path, value)
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in schemes:
        raise ConfigError(path, value, f"must be a URL starting with {' or '.join(schemes)}://")
    return url


def parse_table(path: str, value: object) -> Mapping[str, Any]:
    """A TOML table, or a :class:`ConfigError` naming ``path``."""
    if not isinstance(value, Mapping):
        raise ConfigError(path, value, "must be a table")
    return value


def parse_section(
    path: str,
    raw: Mapping[str, Any],
    cls: type[T],
    parsers: Mapping[str, tuple[str, Callable[[str, Any], Any]]],
    base: T | None = None,
) -> T:
    """Build dataclass ``cls`` from table ``raw``: each TOML key maps to (field, parser)."""
    unknown = sorted(set(raw) - set(parsers))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, MISSING, f"unknown key (known: {', '.join(sorted(parsers))})")
    values = {
        attr: parse(f"{path}.{key}", raw[key])
        for key, (attr, parse) in parsers.items()
        if key in raw
    }
    return replace(base, **values) if base is not None else cls(**values)  # type: ignore[type-var]


def resolve_secret(
    path: str, name: str, file: str | None, env_name: str, env: Mapping[str, str]
) -> tuple[str | None, str]:
    """Resolve one secret: ``$CREDENTIALS_DIRECTORY/<name>`` > ``*_file`` > ``*_env``.

    Returns ``(value, source)`` where ``source`` says where it came from (never the value). An empty
    value counts as unset (fail closed). A configured file that cannot be read is a config error.
    """
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        candidate = Path(cred_dir) / name
        if candidate.is_file():
            return _read_secret(f"$CREDENTIALS_DIRECTORY/{name}", candidate), "credential"
    if file is not None:
        return _read_secret(f"{path}_file", Path(file)), "file"
    value = env.get(env_name, "").strip()
    return (value or None), ("env" if value else "unset")


def _read_secret(path: str, file: Path) -> str | None:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # The file name is configuration, not a secret; the reason comes from the OS.
        raise ConfigError(
            path, str(file), f"cannot read secret file: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return text.strip() or None


def describe(cfg: Config) -> dict[str, Any]:
    """The effective configuration as plain JSON-able data, with secrets only as set/unset."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj) if f.repr}
        if isinstance(obj, float) and not math.isfinite(obj):
            return str(obj)
        return obj

    out: dict[str, Any] = plain(cfg)
    out["secrets"] = {
        "job_secret": "set" if cfg.secrets.job else "unset",
        "job_secret_source": cfg.secrets.job_source,
        "warmup_secret": "set" if cfg.secrets.warmup else "unset",
        "warmup_secret_source": cfg.secrets.warmup_source,
        **plain(cfg.secrets_config),
    }
    out.pop("secrets_config", None)
    # The URL is password-free by construction (config_database); the password shows as set/unset.
    out["database"]["password"] = "set" if cfg.database.password else "unset"
    return out
