"""The ``warmupd`` command line (SPEC §10): ``main(argv) -> int``.

Every command maps errors through :func:`warmupd.errors.exit_code_for` and prints one line to stderr:
an operator sees ``config error: jobs.x.schedule: …``, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from warmupd import __version__
from warmupd.cli_check import cmd_check_config
from warmupd.cli_common import RUN_EXIT, _load, _run_async
from warmupd.cli_remote import cmd_runs, cmd_status, cmd_trigger, cmd_warmup
from warmupd.clock import SystemClock
from warmupd.config import Config, load_config
from warmupd.errors import UsageError, WarmupdError, exit_code_for

# --------------------------------------------------------------------------- commands


def cmd_calendar(args: argparse.Namespace) -> int:
    """Print the next N fire times of any schedule under warmupd's rules."""
    from warmupd.scheduler import describe_next_fires, validate_schedule

    try:
        validate_schedule(args.expr)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        after_ms = _parse_after(args.after) if args.after else SystemClock().wall_ms()
        pairs = describe_next_fires(args.expr, args.tz, after_ms, args.n)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"calendar: {exc}") from None
    if args.json:
        print(json.dumps([utc for utc, _ in pairs]))
    else:
        print(f"schedule: {args.expr}  (time zone {args.tz})")
        for i, (utc, local) in enumerate(pairs, 1):
            print(f"{i:>4}  {utc}   {local}")
    return 0


def _parse_after(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending schema migrations to the configured state (SQLite file or PostgreSQL)."""
    from warmupd.state.backends import describe_location, state_database

    cfg = _load(args)
    where = describe_location(cfg.database, cfg.daemon.db_path)

    async def go() -> int:
        db = state_database(cfg.database, cfg.daemon.db_path)
        await db.open(migrate=False)
        try:
            before, after = await db.migrate()
        finally:
            await db.close()
        done = "up to date" if before == after else f"migrated from {before}"
        print(f"{where}: schema version {after} ({done})")
        return 0

    return _run_async(go())


def cmd_copy_state(args: argparse.Namespace) -> int:
    """Copy a state to another backend (SPEC §14): a bar per table on a terminal, counts at the end."""
    from warmupd.state.copy import TerminalProgress, copy_state, parse_location

    source, target = parse_location("--from", args.source), parse_location("--to", args.target)
    counts = _run_async(
        copy_state(
            source,
            target,
            now_ms=SystemClock().wall_ms(),
            configured=lambda: _load(args).database,
            force=args.force,
            progress=TerminalProgress(sys.stderr) if sys.stderr.isatty() else None,
            warn=lambda message: print(f"warning: {message}", file=sys.stderr),
        )
    )
    print("\n".join(count.line() for count in counts))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Bulk upsert comparisons from a JSONL file; report bad lines by number."""
    from warmupd.importer import import_lines
    from warmupd.state.backends import state_database

    cfg = _load(args)
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None

    async def go() -> int:
        async with state_database(cfg.database, cfg.daemon.db_path) as db:
            report = await import_lines(db, text.splitlines(), SystemClock().wall_ms())
        for line_no, reason in report.errors:
            print(f"{path}:{line_no}: {reason}", file=sys.stderr)
        print(
            f"imported {report.created + report.updated} comparisons "
            f"({report.created} new, {report.updated} updated), {len(report.errors)} bad lines"
        )
        return 1 if report.errors and not (report.created + report.updated) else 0

    return _run_async(go())


def cmd_demo_data(args: argparse.Namespace) -> int:
    """Load realistic synthetic comparisons."""
    from warmupd.importer import load_demo_data
    from warmupd.state.backends import describe_location, state_database

    cfg = _load(args)

    async def go() -> int:
        async with state_database(cfg.database, cfg.daemon.db_path) as db:
            n = await load_demo_data(
                db,
                count=args.count,
                seed=args.seed,
                now_ms=SystemClock().wall_ms(),
                only_if_empty=args.if_empty,
            )
        where = describe_location(cfg.database, cfg.daemon.db_path)
        print(f"demo data: {n} comparisons loaded into {where}")
        return 0

    return _run_async(go())


def cmd_run(args: argparse.Namespace) -> int:
    """One run of a job in the foreground, without HTTP; prints the run record.

    Exit 0 success, 1 failed or cancelled, 3 skipped (held elsewhere, already running).
    """
    from warmupd.daemon import run_once

    cfg = _load(args)
    if args.job not in cfg.jobs:
        raise UsageError(f"unknown job {args.job!r} (known: {', '.join(cfg.jobs)})")
    record = _run_async(
        run_once(
            cfg, args.job, limit=args.limit, concurrency=args.concurrency, progress=_progress()
        )
    )
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        for key, value in record.items():
            print(f"{key:>11}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    return RUN_EXIT.get(record["status"], 1)


def cmd_purge(args: argparse.Namespace) -> int:
    """Purge now what housekeeping purges (expired cache entries, old runs, dead lock rows, old
    fire claims), in the foreground under the housekeeping lock; prints what was deleted."""
    from warmupd.config import JOB_HOUSEKEEPING
    from warmupd.daemon import run_once

    record = _run_async(run_once(_load(args), JOB_HOUSEKEEPING))
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        purged = record["metadata"].get("purged", {})
        print(f"purge {record['status']}: " + ", ".join(f"{k} {v}" for k, v in purged.items()))
    return RUN_EXIT.get(record["status"], 1)


def _progress() -> Callable[[str, int, int, int], None]:
    """A progress bar on a TTY, plain lines otherwise (one per item)."""
    tty = sys.stderr.isatty()

    def show(job: str, run_id: int, done: int, total: int) -> None:
        if tty:
            width = 30
            filled = width * done // max(total, 1)
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if done >= total else ""
            print(
                f"\r{job} run {run_id} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True
            )
        else:
            print(f"{job} run {run_id}: {done}/{total} items", file=sys.stderr, flush=True)

    return show


def _demo_secrets(cfg: Config) -> Config:
    """``make run``: generate the unset secrets for this run and print them once with the URL.

    They go into the environment variables the config names, so a SIGHUP reload keeps them; a
    secret set by the operator (variable, file or credential) is left alone and never printed.
    """
    made = {}
    for label, name, value in (
        ("job secret (Run now, Pause/Resume)", cfg.secrets_config.job_secret_env, cfg.secrets.job),
        ("warmup secret (Warm up now)", cfg.secrets_config.warmup_secret_env, cfg.secrets.warmup),
    ):
        if not value and name:
            os.environ[name] = made[label] = secrets.token_urlsafe(24)
    if made:
        cfg = load_config(cfg.source)
    host = "127.0.0.1" if cfg.http.host in ("0.0.0.0", "::", "") else cfg.http.host  # noqa: S104
    print(f"warmupd dashboard: http://{host}:{cfg.http.port}/ui")
    for label, value in made.items():
        print(f"  {label}: {value}")
    if made:
        print("  (generated for this run only and shown once; type the job secret into the page)")
    sys.stdout.flush()
    return cfg


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    from warmupd.daemon import serve
    from warmupd.pool import stop_resource_tracker

    cfg = _load(args)
    if args.demo_secrets:
        cfg = _demo_secrets(cfg)
    try:
        return _run_async(serve(cfg, log_format=args.log_format, log_level=args.log_level))
    finally:
        # Once the loop and the pool are gone, so that systemd finds no process left at a stop.
        stop_resource_tracker()


def _bounded(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}")
        return value

    return parse


COPY_STATE_HELP = """URL: postgresql://user[:password]@host[:port]/dbname (or postgres://), or a SQLite
file: a path, or sqlite:///absolute/path. Without a password in the URL, a URL equal to the
configured [database] url uses the daemon's password (credential, file, env; -c as for serve),
else $PGPASSWORD or ~/.pgpass. Passwords are never printed. Copies comparisons, cache entries
(fences kept), runs (ids kept), schedule state and pauses; never locks, fire claims or nodes. Rows
are upserted on their keys, nothing is deleted: running it again copies nothing new. Stop the
daemons first: it refuses while a daemon heartbeats on --to (--force overrides)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="warmupd", description="Keeps expensive derived results warm."
    )
    parser.add_argument("--version", action="version", version=f"warmupd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "-c",
            "--config",
            help="config file (default $WARMUPD_CONFIG, then /etc/warmupd/warmupd.toml)",
        )
        p.set_defaults(func=func)
        return p

    p = add("serve", cmd_serve, "run the daemon")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument(
        "--demo-secrets",
        action="store_true",
        help="the demo (make run): generate unset secrets for this run, print them with the URL",
    )

    p = add("check-config", cmd_check_config, "validate the config and show the next fires")
    p.add_argument("--json", action="store_true", help="one JSON object for scripts")
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not connect to a configured PostgreSQL (by default it is checked: reachable, "
        "credentials accepted, schema not newer than this warmupd)",
    )
    p.add_argument(
        "--credentials-directory",
        metavar="DIR",
        help="read secrets as the service does, from DIR/job_secret and DIR/warmup_secret "
        "(e.g. /run/credentials/warmupd.service; default $CREDENTIALS_DIRECTORY)",
    )

    add("migrate", cmd_migrate, "apply pending schema migrations")

    p = add(
        "copy-state", cmd_copy_state, "copy a state to another database (SQLite <-> PostgreSQL)"
    )
    p.epilog = COPY_STATE_HELP
    p.add_argument("--from", dest="source", required=True, metavar="URL", help="the state to copy")
    p.add_argument("--to", dest="target", required=True, metavar="URL", help="where to (migrated)")
    p.add_argument("--force", action="store_true", help="copy even while daemons run on --to")

    p = add("import", cmd_import, "bulk upsert comparisons from a JSONL file")
    p.add_argument("file", metavar="FILE.jsonl")

    p = add("demo-data", cmd_demo_data, "load realistic synthetic comparisons")
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--if-empty", action="store_true", help="only when the database has none")

    p = add("run", cmd_run, "one run of a job in the foreground (no HTTP); prints the run record")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--limit", type=_bounded(1, 1000), default=None)
    p.add_argument("--concurrency", type=_bounded(1, 64), default=None)
    p.add_argument("--json", action="store_true")

    p = add("purge", cmd_purge, "purge expired cache entries, old runs and dead lock rows now")
    p.add_argument("--json", action="store_true")

    p = add("calendar", cmd_calendar, "show the next fire times of a schedule")
    p.add_argument("expr", metavar="EXPR")
    p.add_argument("--tz", default="UTC")
    p.add_argument("--after", help="ISO-8601 start instant (default now)")
    p.add_argument("-n", type=int, default=5)
    p.add_argument("--json", action="store_true")

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="daemon base URL (default from the config's [http] section)")
        p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")

    p = add("trigger", cmd_trigger, "trigger a job on the running daemon")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--wait", action="store_true", help="wait for the run and print it")
    p.add_argument("--limit", type=int)
    p.add_argument("--concurrency", type=int)
    client_options(p)

    p = add("warmup", cmd_warmup, "request an on-demand warmup of one comparison")
    p.add_argument("slug", metavar="SLUG")
    client_options(p)

    p = add("status", cmd_status, "show the running daemon's status")
    client_options(p)

    p = add("runs", cmd_runs, "list recent runs of the running daemon")
    p.add_argument("--job")
    p.add_argument(
        "--status", choices=("running", "success", "failed", "skipped", "cancelled", "abandoned")
    )
    p.add_argument("--limit", type=int)
    client_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``warmupd`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except WarmupdError as exc:
        print(
            f"warmupd: {exc}" if not str(exc).startswith("config error") else str(exc),
            file=sys.stderr,
        )
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"warmupd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
