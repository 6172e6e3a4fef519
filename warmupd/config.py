"""TOML configuration → a tree of frozen, keyword-only dataclasses (SPEC §2).

Every value passes through a small named parse function that raises
:class:`~warmupd.errors.ConfigError` with the key path and the offending value. Unknown keys are an
error: a typo must never be silently ignored. Defaults live in the dataclasses below and nowhere else.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from warmupd.config_database import SECRETS_KEYS, DatabaseConfig, parse_database
from warmupd.config_kinds import KindSpec, split_kind_job
from warmupd.config_values import (
    parse_bool,
    parse_cron,
    parse_duration_ms,
    parse_int,
    parse_on_unavailable,
    parse_section,
    parse_str,
    parse_table,
    parse_timezone,
    parse_url,
    resolve_secret,
)
from warmupd.errors import MISSING, ConfigError

T = TypeVar("T")

JOB_FORECASTS = "warmup-forecasts"
JOB_INSIGHTS = "warmup-ai-explanations"
JOB_HOUSEKEEPING = "housekeeping"
JOB_ON_DEMAND = "warmup-on-demand"
"""The on-demand warmup is not scheduled; its runs are recorded under this name."""

KNOWN_JOBS = (JOB_FORECASTS, JOB_INSIGHTS, JOB_HOUSEKEEPING)


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True, kw_only=True)
class DaemonConfig:
    """``[daemon]``."""

    state_dir: Path = Path("./var")
    """Unset in the file: ``$STATE_DIRECTORY`` when systemd sets it, else ``./var``."""
    timezone: str = "UTC"
    shutdown_grace_ms: int = 30_000
    pool_workers: int = 0
    pool_idle_shutdown_ms: int = 300_000

    @property
    def db_path(self) -> Path:
        """Where the state database lives."""
        return self.state_dir / "warmupd.db"


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    """``[http]``."""

    host: str = "127.0.0.1"
    port: int = 8321
    max_body_bytes: int = 1_048_576
    read_auth: bool = False


@dataclass(frozen=True, kw_only=True)
class SecretsConfig:
    """``[secrets]``: where the two secrets come from (the values live in :class:`Secrets`)."""

    job_secret_env: str = "JOB_SECRET"  # noqa: S105 - an env var's name, not a secret
    warmup_secret_env: str = "WARMUP_SECRET"  # noqa: S105 - an env var's name, not a secret
    job_secret_file: str | None = None
    warmup_secret_file: str | None = None
    database_password_env: str = "DATABASE_PASSWORD"  # noqa: S105 - an env var's name
    database_password_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class Secrets:
    """The resolved secret values. ``repr`` never shows them."""

    job: str | None = field(default=None, repr=False)
    warmup: str | None = field(default=None, repr=False)
    job_source: str = "unset"
    warmup_source: str = "unset"


@dataclass(frozen=True, kw_only=True)
class RedisConfig:
    """``[redis]``; ``url`` None means locks live in the state database's lease rows."""

    url: str | None = None
    key_prefix: str = "warmupd:"
    on_unavailable: str = "database"
    """``database`` or ``skip`` (``sqlite`` in the file is read as ``database``)."""
    connect_timeout_ms: int = 2_000


@dataclass(frozen=True, kw_only=True)
class LocksConfig:
    """``[locks]``."""

    lease_ms: int = 60_000


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """``[cache]``."""

    fresh_ttl_ms: int = 7 * 86_400_000
    stale_ttl_ms: int = 30 * 86_400_000
    stale_while_revalidate: bool = True


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """``[jobs.<name>]``. Keys that do not apply to a job keep their defaults."""

    name: str
    schedule: str
    timezone: str = "UTC"
    enabled: bool = True
    limit: int = 50
    concurrency: int = 5
    max_duration_ms: int = 3_600_000
    window_ms: int = 7 * 86_400_000
    misfire_grace_ms: int = 6 * 3_600_000
    jitter_ms: int = 0
    item_timeout_ms: int = 60_000
    min_views: int = 10
    run_retention_ms: int = 90 * 86_400_000
    kind: str = "builtin"
    spec: KindSpec | None = None
    """A user-defined job's own settings (``kind = "http"`` or ``"command"``, SPEC §16)."""


@dataclass(frozen=True, kw_only=True)
class OnDemandConfig:
    """``[on_demand]``."""

    max_duration_ms: int = 1_800_000
    concurrency: int = 2
    max_queued: int = 1000


@dataclass(frozen=True, kw_only=True)
class ForecastConfig:
    """``[forecast]``."""

    horizon_days: int = 30
    min_points: int = 7


@dataclass(frozen=True, kw_only=True)
class AIConfig:
    """``[ai]``."""

    provider: str = "builtin"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_ms: int = 60_000
    max_retries: int = 3
    prompt_version: str = "1"
    max_in_flight: int | None = None
    """Model calls in flight across every run and on-demand warmup; ``None``: no global cap."""


def _default_jobs() -> dict[str, JobConfig]:
    return {
        # JobConfig's own defaults are those of the forecasts job.
        JOB_FORECASTS: JobConfig(name=JOB_FORECASTS, schedule="0 2 * * *"),
        JOB_INSIGHTS: JobConfig(
            name=JOB_INSIGHTS,
            schedule="0 3 * * 0",
            limit=30,
            concurrency=3,
            max_duration_ms=7_200_000,
            window_ms=30 * 86_400_000,
            misfire_grace_ms=24 * 3_600_000,
            item_timeout_ms=120_000,
        ),
        JOB_HOUSEKEEPING: JobConfig(
            name=JOB_HOUSEKEEPING,
            schedule="17 * * * *",
            limit=1,
            concurrency=1,
            max_duration_ms=600_000,
            misfire_grace_ms=3_600_000,
            item_timeout_ms=600_000,
        ),
    }


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole effective configuration."""

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    secrets_config: SecretsConfig = field(default_factory=SecretsConfig)
    secrets: Secrets = field(default_factory=Secrets)
    redis: RedisConfig = field(default_factory=RedisConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    locks: LocksConfig = field(default_factory=LocksConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    jobs: dict[str, JobConfig] = field(default_factory=_default_jobs)
    on_demand: OnDemandConfig = field(default_factory=OnDemandConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    ai: AIConfig = field(default_factory=AIConfig)
    source: str | None = None
    """The file this configuration was read from, if any."""


# --------------------------------------------------------------------------- sections


def _dur(*, zero: bool = False) -> Callable[[str, Any], int]:
    return lambda p, v: parse_duration_ms(p, v, allow_zero=zero)


def _int(lo: int, hi: int = 2**31) -> Callable[[str, Any], int]:
    return lambda p, v: parse_int(p, v, minimum=lo, maximum=hi)


def _opt_str(p: str, v: Any) -> str:
    return parse_str(p, v)


_DAEMON = {
    "state_dir": ("state_dir", lambda p, v: Path(parse_str(p, v))),
    "timezone": ("timezone", parse_timezone),
    "shutdown_grace": ("shutdown_grace_ms", _dur(zero=True)),
    "pool_workers": ("pool_workers", _int(0, 256)),
    "pool_idle_shutdown": ("pool_idle_shutdown_ms", _dur()),
}
_HTTP = {
    "host": ("host", _opt_str),
    "port": ("port", _int(0, 65535)),
    "max_body_bytes": ("max_body_bytes", _int(1024, 1 << 30)),
    "read_auth": ("read_auth", parse_bool),
}
_SECRETS = {
    "job_secret_env": ("job_secret_env", _opt_str),
    "warmup_secret_env": ("warmup_secret_env", _opt_str),
    "job_secret_file": ("job_secret_file", _opt_str),
    "warmup_secret_file": ("warmup_secret_file", _opt_str),
    **SECRETS_KEYS,
}
_REDIS = {
    "url": ("url", lambda p, v: parse_url(p, v, schemes=("redis", "rediss", "unix"))),
    "key_prefix": ("key_prefix", lambda p, v: parse_str(p, v, empty=True)),
    "on_unavailable": ("on_unavailable", parse_on_unavailable),
    "connect_timeout": ("connect_timeout_ms", _dur()),
}
_LOCKS = {"lease": ("lease_ms", _dur())}
_CACHE = {
    "fresh_ttl": ("fresh_ttl_ms", _dur()),
    "stale_ttl": ("stale_ttl_ms", _dur()),
    "stale_while_revalidate": ("stale_while_revalidate", parse_bool),
}
_JOB = {
    "schedule": ("schedule", parse_cron),
    "timezone": ("timezone", parse_timezone),
    "enabled": ("enabled", parse_bool),
    "limit": ("limit", _int(1, 100_000)),
    "concurrency": ("concurrency", _int(1, 256)),
    "max_duration": ("max_duration_ms", _dur()),
    "window": ("window_ms", _dur()),
    "misfire_grace": ("misfire_grace_ms", _dur(zero=True)),
    "jitter": ("jitter_ms", _dur(zero=True)),
    "item_timeout": ("item_timeout_ms", _dur()),
    "min_views": ("min_views", _int(0)),
    "run_retention": ("run_retention_ms", _dur()),
}
_ON_DEMAND = {
    "max_duration": ("max_duration_ms", _dur()),
    "concurrency": ("concurrency", _int(1, 256)),
    "max_queued": ("max_queued", _int(1, 1_000_000)),
}
_FORECAST = {"horizon_days": ("horizon_days", _int(1, 366)), "min_points": ("min_points", _int(2))}
_AI = {
    "provider": ("provider", lambda p, v: parse_str(p, v, choices=("builtin", "openai"))),
    "base_url": ("base_url", lambda p, v: parse_url(p, v, schemes=("http", "https"))),
    "model": ("model", _opt_str),
    "api_key_env": ("api_key_env", _opt_str),
    "timeout": ("timeout_ms", _dur()),
    "max_retries": ("max_retries", _int(0, 10)),
    "prompt_version": ("prompt_version", _opt_str),
    "max_in_flight": ("max_in_flight", _int(1, 1024)),
}
_TOP = (
    "daemon",
    "http",
    "secrets",
    "redis",
    "database",
    "locks",
    "cache",
    "jobs",
    "on_demand",
    "forecast",
    "ai",
)


def _ai(raw: Mapping[str, Any]) -> AIConfig:
    if "concurrency" in raw:
        # Undocumented before SPEC §17, and it silently capped every run's model calls (a job at
        # concurrency 5 made 2 calls at once). An error, not an alias: a cap must be chosen knowingly.
        raise ConfigError(
            "ai.concurrency",
            raw["concurrency"],
            "is no longer supported: a run's concurrency now bounds its model calls; to cap model "
            "calls across all runs and on-demand warmups set ai.max_in_flight",
        )
    return parse_section("ai", raw, AIConfig, _AI)


def _jobs(raw: Mapping[str, Any]) -> dict[str, JobConfig]:
    jobs = _default_jobs()
    for name, table in raw.items():
        path, raw_job = f"jobs.{name}", parse_table(f"jobs.{name}", table)
        if name in jobs:
            if "kind" in raw_job:
                raise ConfigError(f"{path}.kind", raw_job["kind"], "a built-in job keeps its kind")
            jobs[name] = parse_section(path, raw_job, JobConfig, _JOB, jobs[name])
            continue
        if name == JOB_ON_DEMAND:
            raise ConfigError(path, MISSING, "is the on-demand warmup's name, not a job to define")
        common, defaults, spec = split_kind_job(name, raw_job, builtin=KNOWN_JOBS)
        base = JobConfig(name=name, schedule="@daily", kind=spec.kind, spec=spec)
        jobs[name] = parse_section(path, common, JobConfig, _JOB, replace(base, **defaults))
    return jobs


def _check_relations(cfg: Config) -> None:
    if cfg.cache.stale_ttl_ms < cfg.cache.fresh_ttl_ms:
        raise ConfigError(
            "cache.stale_ttl", cfg.cache.stale_ttl_ms, "must be at least cache.fresh_ttl"
        )
    if cfg.locks.lease_ms < 3_000:
        # Renewal happens every lease/3; below 1 s a renewal round trip can eat the whole budget.
        raise ConfigError("locks.lease", cfg.locks.lease_ms, "must be at least 3s")
    if cfg.ai.provider == "openai":
        for key in ("base_url", "model"):
            if getattr(cfg.ai, key) is None:
                raise ConfigError(f"ai.{key}", MISSING, "is required when ai.provider = 'openai'")


# --------------------------------------------------------------------------- entry points


def parse_config(
    raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str | None = None
) -> Config:
    """Build a :class:`Config` from parsed TOML.

    :raises ConfigError: naming the first invalid key path.
    """
    env = os.environ if env is None else env
    unknown = sorted(set(raw) - set(_TOP))
    if unknown:
        raise ConfigError(unknown[0], MISSING, f"unknown section (known: {', '.join(_TOP)})")

    def sec(name: str) -> Mapping[str, Any]:
        return parse_table(name, raw.get(name, {}))

    secrets_config = parse_section("secrets", sec("secrets"), SecretsConfig, _SECRETS)
    job_secret, job_src = resolve_secret(
        "secrets.job_secret",
        "job_secret",
        secrets_config.job_secret_file,
        secrets_config.job_secret_env,
        env,
    )
    warmup_secret, warmup_src = resolve_secret(
        "secrets.warmup_secret",
        "warmup_secret",
        secrets_config.warmup_secret_file,
        secrets_config.warmup_secret_env,
        env,
    )
    daemon = parse_section("daemon", sec("daemon"), DaemonConfig, _DAEMON)
    state_directory = env.get("STATE_DIRECTORY", "").split(":")[0]
    if "state_dir" not in sec("daemon") and state_directory:
        # systemd's StateDirectory= sets $STATE_DIRECTORY (/var/lib/warmupd): the shipped unit
        # puts the DB there without the operator editing the config. An explicit key still wins.
        daemon = replace(daemon, state_dir=Path(state_directory))
    jobs_raw = sec("jobs")
    cfg = Config(
        daemon=daemon,
        http=parse_section("http", sec("http"), HttpConfig, _HTTP),
        secrets_config=secrets_config,
        secrets=Secrets(
            job=job_secret, warmup=warmup_secret, job_source=job_src, warmup_source=warmup_src
        ),
        redis=parse_section("redis", sec("redis"), RedisConfig, _REDIS),
        database=parse_database(
            sec("database"),
            password_file=secrets_config.database_password_file,
            password_env=secrets_config.database_password_env,
            env=env,
        ),
        locks=parse_section("locks", sec("locks"), LocksConfig, _LOCKS),
        cache=parse_section("cache", sec("cache"), CacheConfig, _CACHE),
        jobs=_jobs(jobs_raw),
        on_demand=parse_section("on_demand", sec("on_demand"), OnDemandConfig, _ON_DEMAND),
        forecast=parse_section("forecast", sec("forecast"), ForecastConfig, _FORECAST),
        ai=_ai(sec("ai")),
        source=source,
    )
    # A job without its own timezone follows daemon.timezone.
    cfg.jobs.update(
        {
            name: replace(job, timezone=daemon.timezone)
            for name, job in cfg.jobs.items()
            if "timezone" not in parse_table(f"jobs.{name}", jobs_raw.get(name, {}))
        }
    )
    _check_relations(cfg)
    return cfg


def load_config(path: str | Path | None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and parse a TOML file; ``None`` gives the embedded defaults.

    :raises ConfigError: when the file cannot be read, is not TOML, or holds an invalid value.
    """
    if path is None:
        return parse_config({}, env=env)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), MISSING, f"cannot read config file: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), MISSING, f"invalid TOML: {exc}") from None
    return parse_config(raw, env=env, source=str(p))
