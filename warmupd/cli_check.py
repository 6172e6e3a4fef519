"""``warmupd check-config``: the configuration as the daemon will read it, and the database it names.

Validates the file (exit 2 naming the key), prints the effective configuration and the next fires
of every job, and — unless ``--offline`` — connects read-only to a configured PostgreSQL: reachable
(else exit 1), credentials accepted and schema not newer than this warmupd (else exit 2). Errors
reach the caller as :class:`~warmupd.errors.WarmupdError`; :func:`warmupd.cli.main` prints one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from warmupd.cli_common import _load, _run_async
from warmupd.clock import SystemClock
from warmupd.config import Config
from warmupd.config_values import describe


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config; print the effective config and the next fires of every job."""
    from warmupd.config_checks import warnings_for
    from warmupd.scheduler import describe_next_fires

    cfg = _load(args)
    warnings = warnings_for(cfg)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    # A fleet's database is checked as the daemon will use it (reachable, credentials, schema):
    # an unreachable one is exit 1, a refusing or newer one exit 2, one line on stderr.
    database = None if args.offline else _run_async(_check_database(cfg))
    now_ms = SystemClock().wall_ms()
    fires = {
        name: describe_next_fires(job.schedule, job.timezone, now_ms, 3)
        for name, job in cfg.jobs.items()
    }
    if args.json:
        doc = {
            "config": describe(cfg),
            "database": database,
            "nextFires": {name: [utc for utc, _ in pairs] for name, pairs in fires.items()},
            "warnings": warnings,
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"config OK: {cfg.source or '(embedded defaults)'}")
    if database is not None:
        print(f"database OK: {database['url']} (schema version {database['schemaVersion']})")
    _print_tree(describe(cfg))
    print("next fires:")
    for name, pairs in fires.items():
        job = cfg.jobs[name]
        state = "" if job.enabled else " (disabled)"
        print(f"  {name} [{job.schedule} {job.timezone}]{state}")
        for utc, local in pairs:
            print(f"    {utc}   {local}")
    return 0


async def _check_database(cfg: Config) -> dict[str, Any] | None:
    """Connect to the configured PostgreSQL and read its schema version (nothing is written).

    :raises DatabaseUnavailable: unreachable now. :raises DatabaseRejected: credentials, no such
        database. :raises SchemaTooNew: migrated by a newer warmupd. None for the SQLite file.
    """
    from warmupd.errors import SchemaTooNew
    from warmupd.state.backends import state_database
    from warmupd.state.postgres_schema import SCHEMA_VERSION

    if cfg.database.url is None:
        return None
    db = state_database(cfg.database, cfg.daemon.db_path)
    await db.open(migrate=False)
    try:
        version = await db.schema_version()
    finally:
        await db.close()
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(cfg.database.url, version, SCHEMA_VERSION)
    return {"url": cfg.database.url, "schemaVersion": version, "known": SCHEMA_VERSION}


def _print_tree(tree: dict[str, Any], indent: str = "") -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            print(f"{indent}[{key}]")
            _print_tree(value, indent + "  ")
        else:
            print(f"{indent}{key} = {json.dumps(value)}")
