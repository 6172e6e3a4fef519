"""What a SIGHUP can apply and what needs a restart (SPEC §4, §17).

A reload applies every setting the running daemon can change in place: schedules, job limits,
secrets, ``http.read_auth`` and ``http.max_body_bytes``, lease length, cache TTLs, on-demand
concurrency and queue bound, forecast settings, the AI settings, the Redis fallback policy and the
shutdown grace. The settings in :data:`RESTART_ONLY` are bound to resources created once at start-up
— the listening socket, the state database, the Redis client, the process pool — so a changed value
cannot take effect until the next start: the reload keeps the running value, and the daemon logs
``reload.restart_required key=<path>`` and lists the key in ``/api/status`` (``restartRequired``)
until the file and the running process agree again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from warmupd.config import Config

RESTART_ONLY: Final[dict[str, tuple[str, str]]] = {
    # key path in the TOML file: (Config attribute, section attribute)
    "daemon.state_dir": ("daemon", "state_dir"),
    "daemon.pool_workers": ("daemon", "pool_workers"),
    "daemon.pool_idle_shutdown": ("daemon", "pool_idle_shutdown_ms"),
    "http.host": ("http", "host"),
    "http.port": ("http", "port"),
    "redis.url": ("redis", "url"),
    "redis.key_prefix": ("redis", "key_prefix"),
    "redis.connect_timeout": ("redis", "connect_timeout_ms"),
    "database.url": ("database", "url"),
    "database.pool_min": ("database", "pool_min"),
    "database.pool_max": ("database", "pool_max"),
    "database.connect_timeout": ("database", "connect_timeout_ms"),
    "database.statement_timeout": ("database", "statement_timeout_ms"),
    "database.statement_cache": ("database", "statement_cache"),
}
"""Settings held by resources made once at start-up: the socket (``http.host``/``port``), the
state database (``daemon.state_dir``), the Redis client (``redis.url``, whose change also means
another lock namespace; ``key_prefix``, which names the locks being held; ``connect_timeout``, a
client option), the process pool (``daemon.pool_workers``, ``pool_idle_shutdown``) and the
database pool (every ``database.*`` key: the URL names another state altogether)."""


def split_reload(running: Config, new: Config) -> tuple[Config, list[str]]:
    """The config a reload puts in force, and the restart-only keys whose value it could not apply.

    :returns: ``(applied, restart_required)``: ``applied`` is ``new`` with every restart-only
        value kept from ``running``; ``restart_required`` lists, in :data:`RESTART_ONLY` order,
        the keys where ``new`` differs from what runs. Values are never returned (a Redis URL may
        carry a password).
    """
    changed: list[str] = []
    sections: dict[str, dict[str, object]] = {}
    for key, (section, attr) in RESTART_ONLY.items():
        kept = getattr(getattr(running, section), attr)
        if getattr(getattr(new, section), attr) != kept:
            changed.append(key)
            sections.setdefault(section, {})[attr] = kept
    applied = replace(
        new,
        **{
            section: replace(getattr(new, section), **values)
            for section, values in sections.items()
        },
    )
    return applied, changed
